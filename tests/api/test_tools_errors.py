"""Bad tools, tool choices, response formats, tool histories: a 400 before the engine sees them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from headrace.text.grammar import GrammarCompiler
from tests.fakes import FakeEngine, chat_body, make_app, make_client
from tests.schema import validate
from tests.serving.test_tools_validation import (
    ASSISTANT,
    BAD_SCHEMA,
    PERSON,
    RESULT,
    TIME,
    USER,
    WEATHER,
    allowed,
    json_schema,
    named,
)

CHAT = "/v1/chat/completions"


@pytest.fixture
def engine() -> FakeEngine:
    """Room for tool definitions, one prompt token per byte."""
    return FakeEngine(max_model_len=4096)


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"tools": [{**WEATHER, "function": {"name": "get weather"}}]}, "tools.0.function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [TIME, {**WEATHER, "function": {"name": "w", "parameters": BAD_SCHEMA}}]},
         "tools.1.function.parameters"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": named("get_time")}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": allowed("auto", "get_time")}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice.function"),
        ({"functions": [WEATHER["function"]]}, "functions"),
        ({"function_call": {"name": "get_weather"}}, "function_call"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": json_schema(schema=PERSON)}, "response_format.json_schema.name"),
        ({"response_format": json_schema(name="p", schema={"type": "person"})},
         "response_format"),
        ({"response_format": {"type": "json_object"}, "tools": [WEATHER],
          "tool_choice": "required"}, "response_format"),
        ({"messages": [USER, RESULT]}, "messages"),
        ({"messages": [USER, ASSISTANT, {**RESULT, "tool_call_id": "call_9"}]}, "messages"),
        ({"messages": [USER, {**ASSISTANT, "tool_calls": [{**ASSISTANT["tool_calls"][0],
          "function": {"name": "get_weather", "arguments": "{"}}]}, RESULT]},
         "messages.1.tool_calls.0.function.arguments"),
        ({"messages": [USER, ASSISTANT, {"role": "tool", "content": "12"}]},
         "messages.2.tool_call_id"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
async def test_refused_before_the_engine(
    client: httpx.AsyncClient,
    engine: FakeEngine,
    overrides: dict[str, Any],
    param: str,
    stream: bool,
) -> None:
    response = await client.post(CHAT, json=chat_body(stream=stream, **overrides))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    assert engine.prompts == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"tools": [WEATHER]},
        {"tools": [WEATHER], "tool_choice": "none"},
        {"tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False},
        {"messages": [USER, ASSISTANT, RESULT], "tools": [WEATHER]},
    ],
)
async def test_accepted(
    client: httpx.AsyncClient, engine: FakeEngine, overrides: dict[str, Any]
) -> None:
    response = await client.post(CHAT, json=chat_body(**overrides))
    assert response.status_code == 200, response.text
    assert len(engine.prompts) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"tools": [WEATHER], "tool_choice": "required"},
        {"tools": [WEATHER, TIME], "tool_choice": named("get_weather")},
        {"tools": [WEATHER, TIME], "tool_choice": allowed("required", "get_time")},
        {"response_format": {"type": "json_object"}},
        {"response_format": json_schema(name="person", schema=PERSON, strict=True)},
    ],
)
async def test_constrained_accepted(
    grammars: GrammarCompiler, engine: FakeEngine, overrides: dict[str, Any]
) -> None:
    async with make_client(make_app(engine, grammars=grammars)) as client:
        response = await client.post(CHAT, json=chat_body(**overrides))
    assert response.status_code == 200, response.text
    ((_, params),) = engine.params.items()
    assert params.grammar is not None


# Parameters with a keyword the grammar cannot enforce (llguidance implements no uniqueItems).
UNIQUE_TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    "required": ["tags"],
}


def tag_tool(*, strict: bool) -> dict[str, Any]:
    function = {"name": "tag", "parameters": UNIQUE_TAGS, "strict": strict}
    return {"type": "function", "function": function}


@pytest.mark.parametrize("choice", ["required", named("tag")], ids=["required", "named"])
async def test_a_forced_call_to_a_strict_tool_the_grammar_cannot_enforce_is_refused(
    grammars: GrammarCompiler, engine: FakeEngine, choice: str | dict[str, Any]
) -> None:
    async with make_client(make_app(engine, grammars=grammars)) as client:
        refused = await client.post(
            CHAT, json=chat_body(tools=[WEATHER, tag_tool(strict=True)], tool_choice=choice)
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "tools"
        assert "tool 'tag'" in error["message"] and "uniqueItems" in error["message"]
        assert engine.prompts == {}
        lenient = await client.post(
            CHAT, json=chat_body(tools=[WEATHER, tag_tool(strict=False)], tool_choice=choice)
        )
        assert lenient.status_code == 200, lenient.text
        # Unforced, nothing is compiled: the strict tool is offered like any other.
        free = await client.post(CHAT, json=chat_body(tools=[tag_tool(strict=True)]))
        assert free.status_code == 200, free.text
    assert len(engine.prompts) == 2
