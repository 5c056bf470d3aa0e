"""The Vercel AI SDK (`ai` with `@ai-sdk/openai`), unchanged, against the real server: a reply
streams in pieces with its usage, and a forced tool call arrives with its arguments."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server, node_check

pytestmark = pytest.mark.e2e


def test_the_ai_sdk_streams_text_and_calls_a_tool(server: Server) -> None:
    result = node_check(server, "ai_sdk.mjs")
    assert len(result["deltas"]) > 1 and "".join(result["deltas"]).strip()
    assert result["finishReason"] == "length"
    usage = result["usage"]
    assert usage["outputTokens"] == 16 and usage["inputTokens"] > 0
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    (call,) = result["toolCalls"]
    assert call["name"] == "get_weather"
    assert isinstance(call["input"]["location"], str) and call["input"]["location"].strip()
    assert result["toolFinishReason"] == "tool-calls"
