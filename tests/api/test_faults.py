"""A fault while reading one request's output ends that request alone; the server serves on.

The faults are injected where the output is read: detokenizing, and parsing tool calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tests.api.sse import events
from tests.fakes import (
    REPLY,
    FakeDetokenizer,
    FakeEngine,
    FakeTokenizer,
    chat_body,
    make_app,
    make_client,
)
from tests.guide import WEATHER_TOOL
from tests.schema import validate


class BrokenParser:
    """A tool-call parser that fails on the first text it reads."""

    markers = ()

    def push(self, text: str) -> list[Any]:
        raise RuntimeError("injected fault")


@pytest.fixture(params=["parser", "detokenizer"])
def faulty(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Body fields that make a request fail while its output is read; other requests read fine."""
    if request.param == "parser":
        broken = dataclasses.replace(FakeTokenizer.tool_call_format, parser=BrokenParser)
        monkeypatch.setattr(FakeTokenizer, "tool_call_format", broken)
        return {"tools": [WEATHER_TOOL]}
    push = FakeDetokenizer.push

    def push_or_fail(self: FakeDetokenizer, token_ids: list[int]) -> str:
        if "boom" in self._stop:
            raise RuntimeError("injected fault")
        return push(self, token_ids)

    monkeypatch.setattr(FakeDetokenizer, "push", push_or_fail)
    return {"stop": ["boom"]}


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


async def test_a_fault_reading_the_output_ends_only_its_request(faulty: dict[str, Any]) -> None:
    engine = FakeEngine(step_delay=0.005, max_model_len=4096)
    async with make_client(make_app(engine), raise_app_exceptions=False) as client:

        def post(**body: Any) -> Any:
            return client.post("/v1/chat/completions", json=chat_body(**body))

        broken_stream, broken_whole, stream, whole = await asyncio.gather(
            post(stream=True, **faulty),
            post(**faulty),
            post(stream=True),
            post(),
        )
        health = await client.get("/health")
    role, error = events(broken_stream, done=False)
    assert role["choices"][0]["delta"]["role"] == "assistant"
    validate(error, "ErrorResponse")
    assert broken_whole.status_code == 500
    validate(broken_whole.json(), "ErrorResponse")
    for failure in (error, broken_whole.json()):
        assert failure["error"]["type"] == "server_error"
        assert "injected" not in str(failure)
    assert content(events(stream)) == REPLY
    assert whole.json()["choices"][0]["message"]["content"] == REPLY
    assert health.status_code == 200 and health.json()["running"] == 0
    assert len(engine.closed_early) == 2  # the broken requests' engine work ended at once
    assert sorted(engine.aborted) == sorted(engine.closed_early)


async def test_the_server_serves_on_after_a_fault(faulty: dict[str, Any]) -> None:
    async with make_client(make_app(FakeEngine(max_model_len=4096))) as client:
        body = chat_body(stream=True, **faulty)
        broken = await client.post("/v1/chat/completions", json=body)
        assert "error" in events(broken, done=False)[-1]
        again = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert content(events(again)) == REPLY
