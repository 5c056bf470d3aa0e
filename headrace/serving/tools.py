"""The request side of function calling and structured outputs: the checks, and what they ask for.

`prepare_tools` and `prepare_response_format` check a parsed request's `tools`, `tool_choice`,
`parallel_tool_calls` and `response_format` (or vLLM's `structured_outputs`) together, as OpenAI
does, and turn them into frozen dataclasses that prompt rendering, constrained sampling and
tool-call parsing work from. Both raise
InvalidRequestError naming the parameter at fault (dotted paths, as every 400 of ours does), and
both are cheap and repeatable: `parse_chat_request` runs them to refuse a bad request before any
work starts; the chat service runs them again for the values.

Where OpenAI is silent or we differ, we follow vLLM:
- `tools: []` is accepted and means no tools (unless `tool_choice` then asks for a call).
- `tool_choice: "none"` without `tools` is accepted; any other `tool_choice` needs `tools`.
- `parallel_tool_calls` without `tools` is ignored.
- The deprecated `functions` and `function_call` are refused, not mapped onto `tools`: the answer
  would carry `tool_calls`, which a client of the old API does not read.
- `strict` is passed on, not checked against OpenAI's strict-mode subset of JSON Schema: a forced
  call to a strict tool is refused (400) when the grammar cannot enforce every keyword of its
  parameters; a non-strict tool's unenforceable keywords are ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from jsonschema import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for

from headrace.errors import InvalidRequestError, invalid_value, missing_parameter
from headrace.text import FunctionSpec

if TYPE_CHECKING:
    from headrace.serving.protocol import (
        ChatCompletionRequest,
        StructuredOutputs,
        Tool,
        ToolChoice,
    )

__all__ = [
    "FunctionTool",
    "NamedFunction",
    "OutputConstraint",
    "ToolChoiceMode",
    "ToolRequest",
    "function_tools",
    "prepare_response_format",
    "prepare_tools",
    "template_tools",
]

ToolChoiceMode = Literal["none", "auto", "required"]
# Arguments of a function that declares no parameters: an empty object.
_NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}}
# Most JSON objects one schema may hold. Checking costs ~0.2 ms per object on the event loop;
# real schemas hold tens (OpenAI's strict mode allows 5000 properties in all).
_MAX_SCHEMA_OBJECTS = 2_000


@dataclass(frozen=True)
class FunctionTool:
    # Name the model calls it by: 1-64 of [a-zA-Z0-9_-], unique within the request.
    name: str
    # What it does, for the model; None when not given.
    description: str | None
    # JSON Schema of its arguments (a valid schema of an object); None: it takes no arguments.
    parameters: Mapping[str, Any] | None
    # The client asked for arguments that follow `parameters` exactly.
    strict: bool

    @property
    def arguments_schema(self) -> Mapping[str, Any]:
        """The schema the arguments must match: `parameters`, or an empty object."""
        return _NO_ARGUMENTS if self.parameters is None else self.parameters

    @property
    def spec(self) -> FunctionSpec:
        """What a tool-call grammar needs of it: name, arguments schema, strictness."""
        return FunctionSpec(self.name, self.arguments_schema, self.strict)


@dataclass(frozen=True)
class NamedFunction:
    # The function the model must call (`tool_choice: {"type": "function", ...}`): one call.
    name: str


@dataclass(frozen=True)
class ToolRequest:
    # Every tool of the request, in its order: all of them are offered in the prompt.
    tools: tuple[FunctionTool, ...]
    # "none": answer in text; "auto": text or calls; "required": one call or more; or the
    # one function the model must call.
    choice: ToolChoiceMode | NamedFunction
    # Names the model may call, in `tools` order: all of them, the named one, the subset of
    # `allowed_tools`, or none for "none".
    allowed: tuple[str, ...]
    # The model may make several calls in one answer (`parallel_tool_calls`, default true).
    parallel: bool

    @property
    def forced(self) -> bool:
        """The answer must be tool calls: "required" or a named function."""
        return self.choice not in ("none", "auto")

    @property
    def most_forced_calls(self) -> int:
        """The most calls a forced answer may hold: one for a named function or without
        parallel calls, else one per callable tool. Unbounded, a small model that repeats its
        call (the default model does) would repeat it until max_tokens."""
        if isinstance(self.choice, NamedFunction) or not self.parallel:
            return 1
        return len(self.callable_tools)

    @property
    def callable_tools(self) -> tuple[FunctionTool, ...]:
        """The tools named in `allowed`."""
        return tuple(tool for tool in self.tools if tool.name in self.allowed)


@dataclass(frozen=True)
class OutputConstraint:
    # "json_object": any JSON object; "json_schema": JSON that matches `schema`; vLLM's
    # structured outputs: "regex" (a match of `text`), "choice" (one of `choices`) and
    # "grammar" (a sentence of the Lark grammar `text`).
    kind: Literal["json_object", "json_schema", "regex", "choice", "grammar"]
    # The json_schema format's name; None for json_object.
    name: str | None
    # What the format is for, for the model; None when not given.
    description: str | None
    # The JSON Schema the answer must match, checked valid; None: any JSON object.
    schema: Mapping[str, Any] | None
    # The client asked for an answer that follows `schema` exactly.
    strict: bool
    # The regex or the grammar; None for the other kinds.
    text: str | None = None
    # The strings the answer is one of ("choice"); empty for the other kinds.
    choices: tuple[str, ...] = ()
    # The request parameter it comes from, for errors: "response_format" or "structured_outputs".
    param: str = "response_format"


def prepare_tools(request: ChatCompletionRequest) -> ToolRequest | None:
    """The tools the model is offered and how it may use them; None when there are none.

    Raises InvalidRequestError for the deprecated `functions`/`function_call`, a `tool_choice`
    without `tools`, duplicate function names, a `parameters` that is not a valid JSON Schema of
    an object, and a `tool_choice` that names a function not among `tools` or requires a call
    from an empty `tools`.
    """
    _refuse_functions(request)
    if request.tools is None:
        if request.tool_choice not in (None, "none"):
            raise invalid_value(
                "tool_choice", "'tool_choice' is only allowed when 'tools' are specified"
            )
        return None
    tools = function_tools(request.tools)
    parallel = True if request.parallel_tool_calls is None else request.parallel_tool_calls
    prepared = _with_choice(tools, request.tool_choice, parallel)
    return prepared if tools else None


def prepare_response_format(
    request: ChatCompletionRequest, tools: ToolRequest | None
) -> OutputConstraint | None:
    """What the answer must be (`response_format`, or vLLM's `structured_outputs`); None for
    text. `tools` is `prepare_tools(request)`.

    Raises InvalidRequestError for a json_schema format without `json_schema` or with a schema
    that is not valid JSON Schema, for structured outputs that give other than one constraint
    or come with a JSON format, and for either together with forced tool calls.
    """
    format_ = request.response_format
    if request.structured_outputs is not None:
        if format_ is not None and format_.type != "text":
            raise InvalidRequestError(
                "Give either 'response_format' or 'structured_outputs', not both.",
                param="structured_outputs",
            )
        constraint = _structured_output(request.structured_outputs)
    elif format_ is None or format_.type == "text":
        return None
    elif format_.type == "json_object":
        constraint = OutputConstraint("json_object", None, None, None, strict=False)
    else:
        spec = format_.json_schema
        if spec is None:
            raise missing_parameter("response_format.json_schema")
        if spec.schema_ is not None:
            _check_schema(spec.schema_, "response_format", f"response_format '{spec.name}'")
        constraint = OutputConstraint(
            "json_schema", spec.name, spec.description, spec.schema_, strict=bool(spec.strict)
        )
    if tools is not None and tools.forced:
        param = constraint.param
        raise InvalidRequestError(
            f"'{param}' ({constraint.kind}) cannot be combined with a 'tool_choice' that forces "
            "tool calls ('required', as a mode of 'allowed_tools' too, or a named function): the "
            f"answer would have to be tool calls and follow '{param}' at once. Use "
            f"'tool_choice': 'auto' or drop '{param}'.",
            param=param,
        )
    return constraint


def _structured_output(outputs: StructuredOutputs) -> OutputConstraint:
    """The one constraint of vLLM's `structured_outputs`; InvalidRequestError for none or more."""
    given = sum(
        value is not None
        for value in (outputs.json_, outputs.regex, outputs.choice, outputs.grammar)
    )
    if given != 1:
        raise InvalidRequestError(
            "'structured_outputs' takes exactly one of 'json', 'regex', 'choice' and 'grammar'"
            + (f", not {given}" if given else "")
            + ".",
            param="structured_outputs",
        )
    param = "structured_outputs"
    if outputs.json_ is not None:
        _check_schema(outputs.json_, f"{param}.json", f"{param}.json")
        return OutputConstraint("json_schema", None, None, outputs.json_, False, param=param)
    if outputs.choice is not None:
        choices = tuple(outputs.choice)
        return OutputConstraint("choice", None, None, None, False, choices=choices, param=param)
    if outputs.regex is not None:
        return OutputConstraint("regex", None, None, None, False, text=outputs.regex, param=param)
    return OutputConstraint("grammar", None, None, None, False, text=outputs.grammar, param=param)


def function_tools(tools: Sequence[Tool]) -> tuple[FunctionTool, ...]:
    """A request's `tools`, checked: each a valid function, no name twice."""
    functions = tuple(_function_tool(index, tool) for index, tool in enumerate(tools))
    seen: set[str] = set()
    for function in functions:
        if function.name in seen:
            raise invalid_value(
                "tools", f"the function name '{function.name}' is used more than once"
            )
        seen.add(function.name)
    return functions


def template_tools(tools: Sequence[FunctionTool]) -> list[dict[str, Any]]:
    """The tools as chat templates take them: OpenAI's `tools`, fields not given left out."""
    rendered = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = dict(tool.parameters)
        rendered.append({"type": "function", "function": function})
    return rendered


def _refuse_functions(request: ChatCompletionRequest) -> None:
    if request.functions is not None:
        raise InvalidRequestError(
            "'functions' is deprecated and not supported; pass each function as "
            '{"type": "function", "function": {...}} in \'tools\' instead.',
            param="functions",
        )
    if request.function_call is not None:
        raise InvalidRequestError(
            "'function_call' is deprecated and not supported; use 'tool_choice' with 'tools' "
            "instead.",
            param="function_call",
        )


def _function_tool(index: int, tool: Tool) -> FunctionTool:
    function = tool.function
    if function.parameters is not None:
        param = f"tools.{index}.function.parameters"
        what = f"function '{function.name}'"
        declared = function.parameters.get("type", "object")
        if declared != "object":
            raise InvalidRequestError(
                f"Invalid schema for {what}: the arguments are a JSON object, so the schema "
                f"must have 'type': 'object', not {declared!r}.",
                param=param,
            )
        _check_schema(function.parameters, param, what)
    return FunctionTool(
        name=function.name,
        description=function.description,
        parameters=function.parameters,
        strict=bool(function.strict),
    )


def _with_choice(
    tools: tuple[FunctionTool, ...], choice: ToolChoiceMode | ToolChoice | None, parallel: bool
) -> ToolRequest:
    names = tuple(tool.name for tool in tools)
    if choice is None:
        return ToolRequest(tools, "auto", names, parallel)
    if isinstance(choice, str):
        if choice == "required" and not tools:
            raise invalid_value("tool_choice", "'required' needs at least one tool in 'tools'")
        return ToolRequest(tools, choice, () if choice == "none" else names, parallel)
    if choice.type == "function":
        if choice.function is None:
            raise missing_parameter("tool_choice.function")
        name = _known(choice.function.name, names)
        return ToolRequest(tools, NamedFunction(name), (name,), parallel)
    if choice.allowed_tools is None:
        raise missing_parameter("tool_choice.allowed_tools")
    wanted = {_known(ref.function.name, names) for ref in choice.allowed_tools.tools}
    allowed = tuple(name for name in names if name in wanted)
    return ToolRequest(tools, choice.allowed_tools.mode, allowed, parallel)


def _known(name: str, names: tuple[str, ...]) -> str:
    if name not in names:
        raise invalid_value("tool_choice", f"there is no function named '{name}' in 'tools'")
    return name


def _check_schema(schema: Mapping[str, Any], param: str, what: str) -> None:
    """Raises InvalidRequestError unless `schema` is valid under its JSON Schema draft."""
    if _objects_in(schema) > _MAX_SCHEMA_OBJECTS:
        raise InvalidRequestError(
            f"Invalid schema for {what}: it is too large (more than {_MAX_SCHEMA_OBJECTS} "
            "JSON objects).",
            param=param,
        )
    if not isinstance(schema.get("$schema", ""), str):
        raise InvalidRequestError(
            f"Invalid schema for {what}: '$schema' must be a string.", param=param
        )
    with warnings.catch_warnings():  # an unknown "$schema" is checked as the latest draft
        warnings.simplefilter("ignore", DeprecationWarning)
        validator = validator_for(schema, default=Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as error:
        raise InvalidRequestError(
            f"Invalid schema for {what}: {error.message} (at {error.json_path}).", param=param
        ) from None


def _objects_in(document: object) -> int:
    """How many JSON objects `document` holds, itself included."""
    count, pending = 0, [document]
    while pending and count <= _MAX_SCHEMA_OBJECTS:
        item = pending.pop()
        if isinstance(item, Mapping):
            count += 1
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return count
