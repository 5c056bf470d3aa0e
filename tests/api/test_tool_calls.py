"""Tool calls streamed as the SDKs accumulate them, and whole, on a fake engine's scripted reply."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.api.sse import events
from tests.fakes import EOS, MODEL_NAMES, FakeEngine, chat_body, make_app, make_client
from tests.guide import WEATHER_TOOL as WEATHER
from tests.schema import validate

CALL = '<tool_call>{"name": "get_weather", "arguments": {"location": "%s"}}</tool_call>'


def engine_replying(text: str) -> FakeEngine:
    return FakeEngine([*text.encode(), EOS], max_model_len=4096)


async def stream(engine: FakeEngine, **body: Any) -> list[dict[str, Any]]:
    async with make_client(make_app(engine)) as client:
        request = chat_body(stream=True, tools=[WEATHER], **body)
        chunks = events(await client.post("/v1/chat/completions", json=request))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


def accumulate(chunks: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """What the guide's snippet does with the deltas."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            if call.get("id"):
                calls[call["index"]] = {"id": call["id"], "name": call["function"]["name"]}
                calls[call["index"]]["arguments"] = ""
            calls[call["index"]]["arguments"] += call["function"].get("arguments") or ""
    return calls


async def test_streamed_call_deltas_have_the_sdk_shape() -> None:
    chunks = await stream(engine_replying("Let me check. " + CALL % "Berlin"))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "Let me check. "
    call_deltas = [call for d in deltas for call in d.get("tool_calls") or []]
    first, *rest = call_deltas
    assert first["index"] == 0 and first["type"] == "function"
    assert first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) > 1, "arguments arrive in pieces as generated"
    assert all(
        set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in rest
    )
    assert json.loads("".join(d["function"]["arguments"] for d in rest)) == {"location": "Berlin"}
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] == "tool_calls" and reasons.count(None) == len(reasons) - 1


async def test_parallel_calls_are_numbered() -> None:
    chunks = await stream(engine_replying(CALL % "Berlin" + "\n" + CALL % "Paris"))
    calls = accumulate(chunks)
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather"] * 2
    assert [json.loads(calls[i]["arguments"])["location"] for i in (0, 1)] == ["Berlin", "Paris"]
    assert calls[0]["id"] != calls[1]["id"]


async def test_no_markup_leaks_into_content() -> None:
    chunks = await stream(engine_replying(CALL % "Berlin"))
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert all(not text or "<" not in text for text in contents)


async def test_tool_choice_none_reads_no_calls() -> None:
    chunks = await stream(engine_replying(CALL % "Berlin"), tool_choice="none")
    assert accumulate(chunks) == {}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == CALL % "Berlin"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_whole_response_carries_the_calls() -> None:
    engine = engine_replying(CALL % "Berlin" + CALL % "Oslo")
    async with make_client(make_app(engine)) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(tools=[WEATHER]))
    body = response.json()
    validate(body, "CreateChatCompletionResponse")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"location": "Berlin"},
        {"location": "Oslo"},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)


async def test_tools_reach_the_prompt() -> None:
    engine = engine_replying("Hi")
    await stream(engine)
    (prompt,) = engine.prompts.values()
    assert "get_weather" in bytes(t for t in prompt if t < 256).decode()


async def test_forced_calls_need_constrained_decoding() -> None:
    engine = engine_replying("Hi")
    async with make_client(make_app(engine)) as client:
        response = await client.post(
            "/v1/chat/completions", json=chat_body(tools=[WEATHER], tool_choice="required")
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools"
    assert engine.prompts == {}


@pytest.mark.parametrize("text", ["Let me check. " + CALL % "Berlin", CALL % "Berlin"])
async def test_sdk_stream_helper_accumulates_the_call(text: str) -> None:
    http_client = make_client(make_app(engine_replying(text)))
    client = openai.AsyncOpenAI(
        base_url="http://test/v1", api_key="unused", http_client=http_client, max_retries=0
    )
    async with client.chat.completions.stream(
        model=MODEL_NAMES[0],
        messages=[{"role": "user", "content": "Weather in Berlin?"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as sdk_stream:
        final = await sdk_stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Berlin"}
    assert final.choices[0].finish_reason == "tool_calls"
