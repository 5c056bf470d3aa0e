"""The official OpenAI Python SDK, unchanged, against the in-process app."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from headrace.auth import Access, KeyStore, Limits, RateLimiter
from tests.fakes import MODEL_NAMES, REPLY, FakeClock, make_app, make_client

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


def limited_sdk_client(tmp_path: Path, *, max_retries: int) -> tuple[openai.AsyncOpenAI, list[int]]:
    """A client whose key has 50 of its 60,000 tokens a minute (1,000 a second) left.

    The limiter's clock stands still but for the waits the server asks for, as if the SDK's
    sleeps were what made time pass. Returns the statuses the SDK saw, in order.
    """
    clock = FakeClock()
    store = KeyStore(tmp_path / "keys.sqlite3")
    issued = store.create(limits=Limits(tokens=60_000))
    access = Access(store=store, limiter=RateLimiter(clock))
    access.take_tokens(access.authenticate(issued.secret), 60_000 - 50)
    statuses: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 429:
            clock.advance(int(response.headers["retry-after-ms"]) / 1000)

    http_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(access=access)),
        base_url="http://test",
        event_hooks={"response": [on_response]},
    )
    client = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key=issued.secret,
        http_client=http_client,  # type: ignore[arg-type]  # plain httpx: the SDK takes it too
        max_retries=max_retries,
    )
    return client, statuses


async def test_the_sdk_waits_out_a_rate_limit_and_retries(tmp_path: Path) -> None:
    client, statuses = limited_sdk_client(tmp_path, max_retries=2)
    # 20 prompt tokens and 50 to complete: 20 more than are left, 20 ms at 1,000 a second.
    completion = await client.chat.completions.create(
        model=MODEL_NAMES[0], messages=MESSAGES, max_tokens=50
    )
    assert completion.choices[0].message.content == REPLY
    assert statuses == [429, 200]


async def test_a_rate_limit_raises_the_sdk_exception(tmp_path: Path) -> None:
    client, _ = limited_sdk_client(tmp_path, max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model=MODEL_NAMES[0], messages=MESSAGES)
    assert limited.value.code == "rate_limit_exceeded" and limited.value.type == "tokens"
    assert limited.value.response.headers["x-ratelimit-remaining-tokens"] == "50"
