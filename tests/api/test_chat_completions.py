"""POST /v1/chat/completions: whole answers and streams, checked against OpenAI's schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.sse import events
from tests.fakes import EOS, MODEL_NAMES, REPLY, FakeEngine, chat_body, make_app, make_client
from tests.schema import validate


async def test_whole_response(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(model=MODEL_NAMES[1]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion" and body["model"] == MODEL_NAMES[1]
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": REPLY, "refusal": None}
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] == len(REPLY) + 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_whole_response_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=5))
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == REPLY[:5]
    assert body["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_invariants(client: httpx.AsyncClient, include_usage: bool) -> None:
    body = chat_body(stream=True, model=MODEL_NAMES[1])
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    chunks = events(await client.post("/v1/chat/completions", json=body))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        assert chunk["object"] == "chat.completion.chunk"
        assert ("usage" in chunk) is include_usage
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-") and chunks[0]["model"] == MODEL_NAMES[1]
    if include_usage:
        *chunks, last = chunks
        assert last["choices"] == []
        assert last["usage"]["completion_tokens"] == len(REPLY) + 1
        assert all(c["usage"] is None for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    reasons = [c["choices"][0]["finish_reason"] for c in chunks]
    assert reasons[-1] == "stop" and reasons.count(None) == len(reasons) - 1
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == REPLY


async def test_stream_length(client: httpx.AsyncClient) -> None:
    chunks = events(
        await client.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=3))
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == REPLY[:3]


async def test_stream_stop_string(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = chat_body(stream=True, stop=["How", "zzz"])
    chunks = events(await client.post("/v1/chat/completions", json=body))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello, world! "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert engine.aborted == [chunks[0]["id"]]


async def test_multibyte_text_is_never_split() -> None:
    reply = [*"Grüße 🐉".encode(), EOS]
    async with make_client(make_app(FakeEngine(reply))) as client:
        chunks = events(await client.post("/v1/chat/completions", json=chat_body(stream=True)))
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert "".join(pieces) == "Grüße 🐉" and "\ufffd" not in "".join(pieces)


async def test_an_event_is_one_line_whatever_line_ends_the_text_holds() -> None:
    text = "a\u2028b\u2029c\x85d\re\nf"
    async with make_client(make_app(FakeEngine([*text.encode(), EOS]))) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    chunks = events(response)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text
    # Line readers built on str.splitlines() (httpx's aiter_lines) see every event whole.
    lines = [line for line in response.text.splitlines() if line]
    assert len(lines) == len(chunks) + 1 and all(line.startswith("data: ") for line in lines)


async def test_client_errors_come_before_the_stream(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True, model="x"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("engine_kwargs", "error_type", "code"),
    [({"raise_after": 3}, "server_error", None),
     ({"abort_after": 3}, "server_error", "service_unavailable")],
)  # fmt: skip
async def test_error_after_stream_began_is_an_event(
    engine_kwargs: dict[str, Any], error_type: str, code: str | None
) -> None:
    async with make_client(make_app(FakeEngine(**engine_kwargs))) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    *chunks, error = events(response, done=False)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == REPLY[:3]
    validate(error, "ErrorResponse")
    assert error["error"]["type"] == error_type and error["error"]["code"] == code
    assert "exploded" not in response.text  # no internals leak


@pytest.mark.parametrize(
    ("engine_kwargs", "status"), [({"raise_after": 3}, 500), ({"abort_after": 3}, 503)]
)
async def test_engine_failure_in_a_whole_response(
    engine_kwargs: dict[str, Any], status: int
) -> None:
    app = make_app(FakeEngine(**engine_kwargs))
    async with make_client(app, raise_app_exceptions=False) as client:
        response = await client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == status
    validate(response.json(), "ErrorResponse")
    assert "exploded" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"continue_final_message": True, "add_generation_prompt": True}, "continue_final_message"),
        ({"continue_final_message": "yes"}, "continue_final_message"),
        ({"add_generation_prompt": 1}, "add_generation_prompt"),
        ({"chat_template_kwargs": {"tokenize": True}}, "chat_template_kwargs.tokenize"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs.messages"),
        ({"chat_template_kwargs": {"chat_template": "x"}}, "chat_template_kwargs.chat_template"),
        ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
    ],
)
async def test_bad_prompt_endings_are_400(
    client: httpx.AsyncClient, overrides: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(**overrides))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_without_the_generation_prompt_the_prompt_ends_after_the_last_turn(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = chat_body(add_generation_prompt=False)
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert not bytes(list(engine.prompts.values())[-1]).endswith(b"<assistant>")


async def test_chat_template_kwargs_reach_the_template(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    variables = {"enable_thinking": False, "bos_token": "<s>"}
    body = chat_body(chat_template_kwargs=variables)
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    assert bytes(list(engine.prompts.values())[-1]).startswith(
        b'<variables>{"enable_thinking": false, "bos_token": "<s>"}\n'
    )
