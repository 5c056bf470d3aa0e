"""Tools, tool choice, response format and tool-call history: what they ask for, or a 400."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headrace.errors import InvalidRequestError
from headrace.serving import ChatCompletionRequest, parse_chat_request
from headrace.serving.conversation import template_messages
from headrace.serving.tools import (
    FunctionTool,
    NamedFunction,
    OutputConstraint,
    ToolRequest,
    prepare_response_format,
    prepare_tools,
    template_tools,
)
from headrace.text import FunctionSpec
from tests.fakes import chat_body
from tests.guide import WEATHER_PARAMETERS
from tests.guide import WEATHER_TOOL as WEATHER

TIME = {"type": "function", "function": {"name": "get_time"}}
WEATHER_TOOL = FunctionTool(
    "get_weather", "Get current weather for a location", WEATHER_PARAMETERS, strict=False
)
TIME_TOOL = FunctionTool("get_time", None, None, strict=False)
PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def allowed(mode: str, *names: str) -> dict[str, Any]:
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [*map(named, names)]}}


def json_schema(**spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": spec}


def parsed(**overrides: Any) -> ChatCompletionRequest:
    return parse_chat_request(orjson.dumps(chat_body(**overrides)))


def refusal(**overrides: Any) -> InvalidRequestError:
    """The error parsing the request or preparing its tools and response format raises; a 400
    invalid_request_error (codes: test_malformed)."""
    with pytest.raises(InvalidRequestError) as caught:
        request = parsed(**overrides)
        prepare_response_format(request, prepare_tools(request))
    error = caught.value
    assert error.type == "invalid_request_error"
    return error


# ---- tools and tool_choice ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, None),
        ({"tools": []}, None),
        ({"tools": [], "tool_choice": "auto"}, None),
        ({"tools": [], "tool_choice": "none"}, None),
        ({"tool_choice": "none"}, None),
        ({"parallel_tool_calls": False}, None),
        ({"tools": [WEATHER]},
         ToolRequest((WEATHER_TOOL,), "auto", ("get_weather",), parallel=True)),
        ({"tools": [WEATHER], "tool_choice": "auto"},
         ToolRequest((WEATHER_TOOL,), "auto", ("get_weather",), parallel=True)),
        ({"tools": [WEATHER], "tool_choice": "none"},
         ToolRequest((WEATHER_TOOL,), "none", (), parallel=True)),
        ({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
         ToolRequest((WEATHER_TOOL,), "required", ("get_weather",), parallel=False)),
        ({"tools": [WEATHER, TIME], "tool_choice": named("get_weather")},
         ToolRequest((WEATHER_TOOL, TIME_TOOL), NamedFunction("get_weather"), ("get_weather",),
                     parallel=True)),
        ({"tools": [WEATHER, TIME], "tool_choice": allowed("required", "get_time")},
         ToolRequest((WEATHER_TOOL, TIME_TOOL), "required", ("get_time",), parallel=True)),
        ({"tools": [WEATHER, TIME], "tool_choice": allowed("auto", "get_time", "get_weather")},
         ToolRequest((WEATHER_TOOL, TIME_TOOL), "auto", ("get_weather", "get_time"),
                     parallel=True)),
    ],
)  # fmt: skip
def test_tools_and_choices(overrides: dict[str, Any], expected: ToolRequest | None) -> None:
    assert prepare_tools(parsed(**overrides)) == expected


def test_tool_request_helpers() -> None:
    request = prepare_tools(parsed(tools=[WEATHER, TIME], tool_choice=named("get_time")))
    assert request is not None and request.forced
    assert request.callable_tools == (TIME_TOOL,)
    assert TIME_TOOL.arguments_schema == {"type": "object", "properties": {}}
    assert WEATHER_TOOL.arguments_schema == WEATHER_PARAMETERS
    assert template_tools(request.tools) == [WEATHER, TIME]
    for choice in ("auto", "none"):
        request = prepare_tools(parsed(tools=[WEATHER], tool_choice=choice))
        assert request is not None and not request.forced


@pytest.mark.parametrize(
    ("overrides", "most"),
    [
        ({"tool_choice": named("get_time")}, 1),
        ({"tool_choice": named("get_time"), "parallel_tool_calls": True}, 1),
        ({"tool_choice": "required"}, 2),
        ({"tool_choice": "required", "parallel_tool_calls": False}, 1),
        ({"tool_choice": allowed("required", "get_time")}, 1),
    ],
)
def test_a_forced_answer_holds_at_most_one_call_per_tool(
    overrides: dict[str, Any], most: int
) -> None:
    request = prepare_tools(parsed(tools=[WEATHER, TIME], **overrides))
    assert request is not None and request.most_forced_calls == most


def test_strict_and_draft_07_schemas_are_accepted() -> None:
    parameters = {"$schema": "http://json-schema.org/draft-07/schema#", **WEATHER_PARAMETERS}
    tool = {"type": "function", "function": {"name": "w-2_x", "parameters": parameters,
                                              "strict": True}}  # fmt: skip
    request = prepare_tools(parsed(tools=[tool]))
    assert request is not None
    assert request.tools == (FunctionTool("w-2_x", None, parameters, strict=True),)
    assert request.tools[0].spec == FunctionSpec("w-2_x", parameters, strict=True)


def test_the_grammar_gets_each_callable_tool_typed_and_strict_as_asked() -> None:
    strict_time = {"type": "function", "function": {"name": "get_time", "strict": True}}
    request = prepare_tools(parsed(tools=[WEATHER, strict_time], tool_choice="required"))
    assert request is not None
    assert [tool.spec for tool in request.callable_tools] == [
        FunctionSpec("get_weather", WEATHER_PARAMETERS, strict=False),
        FunctionSpec("get_time", {"type": "object", "properties": {}}, strict=True),
    ]


LONG = "f" * 65
BAD_SCHEMA = {"type": "object", "properties": {"location": {"type": "strng"}}}


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"tools": [{**WEATHER, "function": {"name": "get weather"}}]}, "tools.0.function.name"),
        ({"tools": [{**WEATHER, "function": {"name": ""}}]}, "tools.0.function.name"),
        ({"tools": [{**WEATHER, "function": {"name": LONG}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0.type"),
        ({"tools": [WEATHER, TIME, WEATHER]}, "tools"),
        ({"tools": [TIME, {**WEATHER, "function": {"name": "w", "parameters": BAD_SCHEMA}}]},
         "tools.1.function.parameters"),
        ({"tools": [{**WEATHER, "function": {"name": "w", "parameters": {"required": "a"}}}]},
         "tools.0.function.parameters"),
        ({"tools": [{**WEATHER, "function": {"name": "w", "parameters": {"type": "string"}}}]},
         "tools.0.function.parameters"),
        ({"tools": [{**WEATHER, "function": {"name": "w", "parameters": {"$schema": 7}}}]},
         "tools.0.function.parameters"),
        ({"tools": [{**WEATHER, "function": {"name": "w", "parameters": ["a"]}}]},
         "tools.0.function.parameters"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": named("get_weather")}, "tool_choice"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [], "tool_choice": named("get_weather")}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": named("get_time")}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": allowed("auto", "get_weather", "get_time")},
         "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice.function"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {}}},
         "tool_choice.function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "x"}}},
         "tool_choice.type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}},
         "tool_choice.allowed_tools"),
        ({"tools": [WEATHER], "tool_choice": allowed("auto")}, "tool_choice.allowed_tools.tools"),
        ({"tools": [WEATHER], "tool_choice": allowed("sometimes", "get_weather")},
         "tool_choice.allowed_tools.mode"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"functions": [WEATHER["function"]]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
    ],
)  # fmt: skip
def test_bad_tools_name_the_param(overrides: dict[str, Any], param: str) -> None:
    assert refusal(**overrides).param == param


def test_tool_error_messages() -> None:
    assert refusal(tool_choice="auto").message == (
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
    )
    assert "'get_weather' is used more than once" in refusal(tools=[WEATHER, WEATHER]).message
    message = refusal(tools=[{**WEATHER, "function": {"name": "w", "parameters": BAD_SCHEMA}}])
    assert message.message.startswith("Invalid schema for function 'w': ")
    assert "$.properties.location.type" in message.message
    assert (
        "no function named 'get_time'"
        in refusal(tools=[WEATHER], tool_choice=named("get_time")).message
    )
    assert "'tools'" in refusal(functions=[WEATHER["function"]]).message
    assert "'tool_choice'" in refusal(function_call="auto").message


# ---- response_format ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, None),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}},
         OutputConstraint("json_object", None, None, None, strict=False)),
        ({"response_format": json_schema(name="person", schema=PERSON, strict=True)},
         OutputConstraint("json_schema", "person", None, PERSON, strict=True)),
        ({"response_format": json_schema(name="any-1", description="Anything.")},
         OutputConstraint("json_schema", "any-1", "Anything.", None, strict=False)),
        ({"response_format": {"type": "json_object"}, "tools": [WEATHER]},
         OutputConstraint("json_object", None, None, None, strict=False)),
        ({"response_format": {"type": "json_object"}, "tools": [WEATHER], "tool_choice": "none"},
         OutputConstraint("json_object", None, None, None, strict=False)),
        ({"response_format": {"type": "text"}, "tools": [WEATHER], "tool_choice": "required"},
         None),
    ],
)  # fmt: skip
def test_response_formats(overrides: dict[str, Any], expected: OutputConstraint | None) -> None:
    request = parsed(**overrides)
    assert prepare_response_format(request, prepare_tools(request)) == expected


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {}}, "response_format.type"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": json_schema(schema=PERSON)}, "response_format.json_schema.name"),
        ({"response_format": json_schema(name="a person")}, "response_format.json_schema.name"),
        ({"response_format": json_schema(name=LONG)}, "response_format.json_schema.name"),
        ({"response_format": json_schema(name="p", schema="object")},
         "response_format.json_schema.schema"),
        ({"response_format": json_schema(name="p", schema={"type": "person"})},
         "response_format"),
        ({"response_format": json_schema(name="p", schema={"properties": {"a": {"minimum": "1"}}})},
         "response_format"),
        ({"response_format": {"type": "json_object"}, "tools": [WEATHER],
          "tool_choice": "required"}, "response_format"),
        ({"response_format": json_schema(name="p", schema=PERSON), "tools": [WEATHER],
          "tool_choice": named("get_weather")}, "response_format"),
        ({"response_format": {"type": "json_object"}, "tools": [WEATHER],
          "tool_choice": allowed("required", "get_weather")}, "response_format"),
    ],
)  # fmt: skip
def test_bad_response_formats_name_the_param(overrides: dict[str, Any], param: str) -> None:
    assert refusal(**overrides).param == param


def test_response_format_error_messages() -> None:
    bad = refusal(response_format=json_schema(name="p", schema={"type": "person"}))
    assert bad.message.startswith("Invalid schema for response_format 'p': ")
    conflict = refusal(
        response_format={"type": "json_object"}, tools=[WEATHER], tool_choice="required"
    )
    assert "cannot be combined" in conflict.message and "'tool_choice'" in conflict.message


# ---- structured_outputs (vLLM's) ------------------------------------------------------------

SO = "structured_outputs"


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"json": PERSON}, OutputConstraint("json_schema", None, None, PERSON, False, param=SO)),
        ({"regex": "[0-9]+"},
         OutputConstraint("regex", None, None, None, False, text="[0-9]+", param=SO)),
        ({"regex": ""}, OutputConstraint("regex", None, None, None, False, text="", param=SO)),
        ({"choice": ["yes", "no"]},
         OutputConstraint("choice", None, None, None, False, choices=("yes", "no"), param=SO)),
        ({"grammar": 'start: "a"+'},
         OutputConstraint("grammar", None, None, None, False, text='start: "a"+', param=SO)),
        ({"json": None, "regex": "a"},
         OutputConstraint("regex", None, None, None, False, text="a", param=SO)),
    ],
)  # fmt: skip
def test_structured_outputs(outputs: dict[str, Any], expected: OutputConstraint) -> None:
    request = parsed(structured_outputs=outputs, response_format={"type": "text"})
    assert prepare_response_format(request, prepare_tools(request)) == expected


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"structured_outputs": {}}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
        ({"structured_outputs": {"choice": [1]}}, "structured_outputs.choice.0"),
        ({"structured_outputs": {"json_object": True}}, "structured_outputs.json_object"),
        ({"structured_outputs": {"json": {"type": "person"}}}, "structured_outputs.json"),
        ({"structured_outputs": "a"}, "structured_outputs"),
        ({"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}},
         "structured_outputs"),
        ({"structured_outputs": {"choice": ["a"]}, "tools": [WEATHER], "tool_choice": "required"},
         "structured_outputs"),
    ],
)  # fmt: skip
def test_bad_structured_outputs_name_the_param(overrides: dict[str, Any], param: str) -> None:
    assert refusal(**overrides).param == param


# ---- history: assistant tool calls and tool results --------------------------------------

USER = {"role": "user", "content": "What's the weather in Berlin?"}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Berlin"}'}}  # fmt: skip
ASSISTANT = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "12 degrees, cloudy"}


def test_history_with_tool_calls_and_results() -> None:
    second = {**CALL, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [CALL, second]},
        RESULT,
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9am"}]},
        {"role": "assistant", "content": "It is 12 degrees."},
        {"role": "user", "content": "Thanks"},
    ]
    rendered = template_messages(parsed(messages=messages).messages)
    assert rendered[1] == {"role": "assistant", "tool_calls": [CALL, second]}
    assert rendered[2] == RESULT
    assert rendered[3]["tool_call_id"] == "call_2"


@pytest.mark.parametrize(
    ("messages", "param", "message"),
    [
        ([USER, RESULT], "messages", "messages.1 has role 'tool'"),
        ([USER, ASSISTANT, {**RESULT, "tool_call_id": "call_9"}], "messages", "'call_9'"),
        ([RESULT, USER, ASSISTANT], "messages", "messages.0 has role 'tool'"),
        ([USER, ASSISTANT, {"role": "tool", "content": "12"}], "messages.2.tool_call_id",
         "Missing required parameter"),
        ([USER, ASSISTANT, {"role": "tool", "tool_call_id": "call_1"}], "messages.2.content",
         "Missing required parameter"),
        ([USER, {**ASSISTANT, "tool_calls": [{**CALL, "function": {
            "name": "get_weather", "arguments": "{location: Berlin"}}]}],
         "messages.1.tool_calls.0.function.arguments", "must be a JSON document"),
        ([{**USER, "tool_calls": [CALL]}], "messages.0.tool_calls",
         "only assistant messages may have tool calls"),
        ([USER, {**ASSISTANT, "tool_calls": []}], "messages.1.content",
         "Missing required parameter"),
    ],
)  # fmt: skip
def test_bad_history(messages: list[dict[str, Any]], param: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        template_messages(parsed(messages=messages).messages)
    assert caught.value.param == param
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("call", "param"),
    [
        ({**CALL, "function": {"name": "f", "arguments": {"location": "Berlin"}}},
         "messages.1.tool_calls.0.function.arguments"),
        ({"type": "function", "function": CALL["function"]}, "messages.1.tool_calls.0.id"),
        ({**CALL, "type": "custom"}, "messages.1.tool_calls.0.type"),
    ],
)  # fmt: skip
def test_malformed_tool_calls(call: dict[str, Any], param: str) -> None:
    assert refusal(messages=[USER, {**ASSISTANT, "tool_calls": [call]}]).param == param
