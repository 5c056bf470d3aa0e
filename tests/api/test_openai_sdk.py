"""The official OpenAI Python SDK, unchanged, against the in-process app."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes import MODEL_NAMES, REPLY, make_app, make_client

KEY = "sk-test"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


def sdk_client(api_key: str = KEY) -> openai.AsyncOpenAI:
    http_client = make_client(make_app(api_keys=[KEY]))
    return openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key=api_key,
        http_client=http_client,  # type: ignore[arg-type]  # plain httpx: the SDK takes it too
        max_retries=0,
    )


async def test_whole() -> None:
    client = sdk_client()
    completion = await client.chat.completions.create(
        model=MODEL_NAMES[0], messages=MESSAGES, max_tokens=50
    )
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == len(REPLY) + 1


async def test_stream_with_usage() -> None:
    client = sdk_client()
    stream = await client.chat.completions.create(
        model=MODEL_NAMES[0],
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, reasons = [], None, []
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        elif chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
    assert "".join(text) == REPLY
    assert reasons[-1] == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + len(REPLY) + 1


async def test_errors_raise_the_sdk_exceptions() -> None:
    client = sdk_client()
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.chat.completions.create(model="gpt-5", messages=MESSAGES, stream=True)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=MODEL_NAMES[0], messages=MESSAGES, top_p=0)
    assert bad.value.param == "top_p"
    with pytest.raises(openai.AuthenticationError):
        await sdk_client("sk-wrong").models.list()
    assert [model.id async for model in client.models.list()] == list(MODEL_NAMES)
