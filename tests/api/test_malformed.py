"""A battery of malformed requests: each gets its exact status, code and param, never a 500.

The codes are OpenAI's ("invalid_type", "decimal_above_max_value", "empty_array"...); params
are dotted paths ("messages.0.content").
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from headrace.text.grammar import GrammarCompiler
from tests.api.test_errors import CHAT, MISSING, check
from tests.fakes import chat_body, make_app, make_client

TYPE = "invalid_type"
VALUE = "invalid_value"
CONTEXT = "context_length_exceeded"
USER = {"role": "user", "content": "Hi"}
TOOL = {"type": "function", "function": {"name": "f"}}


def body(**overrides: Any) -> bytes:
    """A request with `overrides`, as JSON text (numbers of any size)."""
    return json.dumps(chat_body(**overrides)).encode()


def raw(field: str, json_text: str) -> bytes:
    """A valid request plus `field` whose value is `json_text` verbatim (NaN, Infinity...)."""
    return json.dumps(chat_body())[:-1].encode() + f', "{field}": {json_text}}}'.encode()


def message(**fields: Any) -> bytes:
    """A request whose one message has `fields`."""
    return body(messages=[fields])


def nested(depth: int) -> bytes:
    """A valid request with `depth` arrays nested in an ignored field."""
    return body()[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"


CASES = [
    # The body as a whole.
    pytest.param(b"", 400, None, None, id="empty body"),
    pytest.param(b'{"model": "test-model", ', 400, None, None, id="truncated JSON"),
    pytest.param(b"[]", 400, None, None, id="array body"),
    pytest.param(b'"hello"', 400, None, None, id="string body"),
    pytest.param(b"null", 400, None, None, id="null body"),
    pytest.param(b"\xff\xfe\x00{", 400, None, None, id="invalid UTF-8"),
    pytest.param(body()[:-1] + b', "user": "\xc3\x28"}', 400, None, None, id="bad UTF-8 in string"),
    pytest.param(nested(100_000), 400, None, None, id="100k nested arrays"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, None, None, id="nested objects"),
    # model
    pytest.param(b'{"messages": [{"role": "user", "content": "Hi"}]}', 400, MISSING, "model",
                 id="model missing"),
    pytest.param(body(model=5), 400, TYPE, "model", id="model number"),
    pytest.param(body(model=None), 400, TYPE, "model", id="model null"),
    pytest.param(body(model="gpt-5"), 404, "model_not_found", "model", id="model unknown"),
    # messages
    pytest.param(b'{"model": "test-model"}', 400, MISSING, "messages", id="messages missing"),
    pytest.param(body(messages=[]), 400, "empty_array", "messages", id="messages empty"),
    pytest.param(body(messages="Hi"), 400, TYPE, "messages", id="messages string"),
    pytest.param(body(messages=None), 400, TYPE, "messages", id="messages null"),
    pytest.param(body(messages=USER), 400, TYPE, "messages", id="messages object"),
    pytest.param(body(messages=[USER] * 2049), 400, "array_above_max_length", "messages",
                 id="2049 messages"),
    pytest.param(body(messages=[None]), 400, TYPE, "messages.0", id="message null"),
    pytest.param(body(messages=[USER, "Hi"]), 400, TYPE, "messages.1", id="message string"),
    pytest.param(message(content="Hi"), 400, MISSING, "messages.0.role", id="role missing"),
    pytest.param(message(role="robot", content="Hi"), 400, VALUE, "messages.0.role",
                 id="role unknown"),
    pytest.param(message(role="function", content="Hi"), 400, VALUE, "messages.0.role",
                 id="role function"),
    pytest.param(message(role=1, content="Hi"), 400, VALUE, "messages.0.role", id="role number"),
    pytest.param(message(role="user"), 400, MISSING, "messages.0.content", id="content missing"),
    pytest.param(message(role="user", content=5), 400, TYPE, "messages.0.content",
                 id="content number"),
    pytest.param(message(role="user", content={"text": "Hi"}), 400, TYPE, "messages.0.content",
                 id="content object"),
    pytest.param(message(role="user", content=[5]), 400, TYPE, "messages.0.content.0",
                 id="content part number"),
    pytest.param(message(role="user", content=[{"type": "text"}]), 400, MISSING,
                 "messages.0.content.0.text", id="content part without text"),
    pytest.param(message(role="user", content=[{"type": "text", "text": 1}]), 400, TYPE,
                 "messages.0.content.0.text", id="content part text number"),
    pytest.param(message(role="user", content=[{"type": "image_url", "image_url": {"url": "x"}}]),
                 400, VALUE, "messages.0.content.0.type", id="image part"),
    pytest.param(message(role="user", content="Hi", name=7), 400, TYPE, "messages.0.name",
                 id="name number"),
    pytest.param(message(role="assistant", content=None, tool_calls="call"), 400, TYPE,
                 "messages.0.tool_calls", id="tool_calls string"),
    pytest.param(body(messages=[{"role": "user", "content": "x" * 300}]), 400, CONTEXT,
                 "messages", id="prompt over the context"),
    # Sampling numbers: wrong types, NaN and infinities, out of range.
    pytest.param(body(temperature="1"), 400, TYPE, "temperature", id="temperature string"),
    pytest.param(raw("temperature", "NaN"), 400, None, "temperature", id="temperature NaN"),
    pytest.param(raw("temperature", "Infinity"), 400, None, "temperature",
                 id="temperature Infinity"),
    pytest.param(raw("top_p", "-Infinity"), 400, None, "top_p", id="top_p -Infinity"),
    pytest.param(raw("presence_penalty", "NaN"), 400, None, "presence_penalty",
                 id="presence_penalty NaN"),
    pytest.param(raw("temperature", "1e999"), 400, None, "temperature", id="temperature 1e999"),
    pytest.param(body(temperature=2.5), 400, "decimal_above_max_value", "temperature",
                 id="temperature 2.5"),
    pytest.param(body(temperature=-0.1), 400, "decimal_below_min_value", "temperature",
                 id="temperature negative"),
    pytest.param(body(top_p=0), 400, "decimal_below_min_value", "top_p", id="top_p 0"),
    pytest.param(body(top_p=1.01), 400, "decimal_above_max_value", "top_p", id="top_p over 1"),
    pytest.param(body(presence_penalty=3), 400, "decimal_above_max_value", "presence_penalty",
                 id="presence_penalty 3"),
    pytest.param(body(frequency_penalty=-2.5), 400, "decimal_below_min_value",
                 "frequency_penalty", id="frequency_penalty -2.5"),
    # Token counts.
    pytest.param(body(max_tokens=-1), 400, "integer_below_min_value", "max_tokens",
                 id="max_tokens negative"),
    pytest.param(body(max_tokens=1.5), 400, TYPE, "max_tokens", id="max_tokens 1.5"),
    pytest.param(body(max_tokens=10.0), 400, TYPE, "max_tokens", id="max_tokens 10.0"),
    pytest.param(body(max_tokens="5"), 400, TYPE, "max_tokens", id="max_tokens string"),
    pytest.param(body(max_tokens=10**12), 400, CONTEXT, "messages", id="max_tokens 10**12"),
    pytest.param(body(max_completion_tokens=10**30), 400, CONTEXT, "messages",
                 id="max_completion_tokens 10**30"),
    pytest.param(body(n=0), 400, "integer_below_min_value", "n", id="n 0"),
    pytest.param(body(n=129), 400, "integer_above_max_value", "n", id="n 129"),
    pytest.param(body(n="1"), 400, TYPE, "n", id="n string"),
    # seed: a 64-bit signed integer.
    pytest.param(body(seed=2**63), 400, "integer_above_max_value", "seed", id="seed 2**63"),
    pytest.param(body(seed=-(2**63) - 1), 400, "integer_below_min_value", "seed",
                 id="seed below int64"),
    pytest.param(body(seed=1.5), 400, TYPE, "seed", id="seed 1.5"),
    # Flags and options.
    pytest.param(body(stream="true"), 400, TYPE, "stream", id="stream string"),
    pytest.param(body(stream=1), 400, TYPE, "stream", id="stream 1"),
    pytest.param(body(stream_options="usage"), 400, TYPE, "stream_options",
                 id="stream_options string"),
    pytest.param(body(stream_options={"include_usage": True}), 400, None, "stream_options",
                 id="stream_options without stream"),
    pytest.param(body(top_logprobs=-1), 400, "integer_below_min_value", "top_logprobs",
                 id="top_logprobs -1"),
    pytest.param(body(logprobs="yes"), 400, TYPE, "logprobs", id="logprobs string"),
    pytest.param(body(ignore_eos="no"), 400, TYPE, "ignore_eos", id="ignore_eos string"),
    # stop
    pytest.param(body(stop=["a", "b", "c", "d", "e"]), 400, "array_above_max_length", "stop",
                 id="stop 5 strings"),
    pytest.param(body(stop=5), 400, TYPE, "stop", id="stop number"),
    pytest.param(body(stop=["a", 1]), 400, TYPE, "stop.1", id="stop entry number"),
    # tools, tool_choice, response_format
    pytest.param(body(tools=TOOL), 400, TYPE, "tools", id="tools object"),
    pytest.param(body(tools=[None]), 400, TYPE, "tools.0", id="tool null"),
    pytest.param(body(tools=[TOOL] * 129), 400, "array_above_max_length", "tools",
                 id="129 tools"),
    pytest.param(body(tools=[{"type": "retrieval"}]), 400, VALUE, "tools.0.type",
                 id="tool type unknown"),
    pytest.param(body(tools=[{"type": "function"}]), 400, MISSING, "tools.0.function",
                 id="tool without function"),
    pytest.param(body(tools=[{"type": "function", "function": {"name": "a b"}}]), 400, VALUE,
                 "tools.0.function.name", id="tool name with a space"),
    pytest.param(body(tools=[{"type": "function", "function": {"name": ""}}]), 400,
                 "empty_string", "tools.0.function.name", id="tool name empty"),
    pytest.param(body(tools=[{"type": "function", "function": {"name": "f" * 65}}]), 400,
                 "string_above_max_length", "tools.0.function.name", id="tool name too long"),
    pytest.param(body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
                 400, TYPE, "tools.0.function.parameters", id="parameters string"),
    pytest.param(body(tools=[{"type": "function", "function": {
                     "name": "f", "parameters": {"type": "object", "properties": 3}}}]),
                 400, None, "tools.0.function.parameters", id="parameters bad schema"),
    pytest.param(body(tool_choice="maybe"), 400, VALUE, "tool_choice", id="tool_choice unknown"),
    pytest.param(body(tool_choice="required"), 400, None, "tool_choice",
                 id="tool_choice without tools"),
    pytest.param(body(response_format={"type": "xml"}), 400, VALUE, "response_format.type",
                 id="response_format xml"),
    pytest.param(body(response_format="json"), 400, TYPE, "response_format",
                 id="response_format string"),
    pytest.param(body(response_format={"type": "json_schema"}), 400, MISSING,
                 "response_format.json_schema", id="json_schema missing"),
    # Fields headrace does not know, and OpenAI's it cannot honour.
    pytest.param(body(foo={"bar": [1, 2]}), 400, None, "foo", id="unknown field"),
    pytest.param(body(mm_processor_kwargs={}), 400, None, "mm_processor_kwargs",
                 id="vLLM field unknown here"),
    pytest.param(body(reasoning_effort="low"), 400, None, "reasoning_effort",
                 id="reasoning_effort"),
    pytest.param(body(audio={"voice": "alloy", "format": "wav"}), 400, None, "audio", id="audio"),
    pytest.param(body(prediction={"type": "content", "content": "x"}), 400, None, "prediction",
                 id="prediction"),
    pytest.param(body(web_search_options={}), 400, None, "web_search_options",
                 id="web_search_options"),
    pytest.param(body(verbosity="low"), 400, None, "verbosity", id="verbosity"),
    pytest.param(body(modalities=["text", "audio"]), 400, None, "modalities",
                 id="audio modality"),
    pytest.param(body(modalities=["video"]), 400, VALUE, "modalities.0", id="video modality"),
    pytest.param(body(store=True), 400, None, "store", id="store"),
    pytest.param(body(service_tier="flex"), 400, VALUE, "service_tier", id="service_tier flex"),
    pytest.param(body(prompt_cache_retention="24h"), 400, VALUE, "prompt_cache_retention",
                 id="prompt_cache_retention 24h"),
    pytest.param(body(metadata={f"k{i}": "v" for i in range(17)}), 400,
                 "array_above_max_length", "metadata", id="metadata of 17 pairs"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "status", "code", "param"), CASES)
async def test_malformed_request(
    client: httpx.AsyncClient, content: bytes, status: int, code: str | None, param: str | None
) -> None:
    response = await client.post(CHAT, content=content)
    check(response, status, code, param)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(body(model="nope")[:-1] + b', "model": "test-model"}', id="duplicate key"),
        pytest.param(body(stream_options=None, response_format=None, tools=None), id="nulls"),
        pytest.param(body(seed=-(2**63)), id="lowest seed"),
        pytest.param(
            body(reasoning_effort=None, audio=None, prediction=None, verbosity=None),
            id="OpenAI fields headrace cannot honour, null",
        ),
        pytest.param(
            body(
                store=False,
                metadata={"team": "search"},
                modalities=["text"],
                service_tier="auto",
                prompt_cache_key="user-42",
                prompt_cache_retention="in_memory",
                safety_identifier="user-42",
            ),
            id="OpenAI fields that change nothing here",
        ),
    ],
)
async def test_accepted_oddities(client: httpx.AsyncClient, content: bytes) -> None:
    """Duplicate keys (the last wins, as in Python's json), nulls for optional objects, and
    OpenAI's parameters at values headrace honours by doing nothing."""
    response = await client.post(CHAT, content=content)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no header"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme only"),
        pytest.param("Bearer ", id="empty key"),
        pytest.param("Basic c2stb25lOg==", id="basic auth"),
        pytest.param("sk-one", id="no scheme"),
        pytest.param("Bearer sk-one sk-one", id="two keys"),
        pytest.param("Bearer " + "k" * 10_000, id="huge key"),
        pytest.param(b"Bearer sk-\xff", id="latin-1 key"),
    ],
)
async def test_bad_authorization(authorization: str | bytes | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with make_client(make_app(api_keys=["sk-one"])) as client:
        response = await client.post(CHAT, json=chat_body(), headers=headers)
    check_auth(response)


def check_auth(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "invalid_api_key", None
    )  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1"), ("POST", "/v1/completion"), ("POST", "/v1/chat/completion"),
     ("GET", "/v1/model"), ("POST", "/v2/chat/completions")],
)  # fmt: skip
async def test_unknown_routes(client: httpx.AsyncClient, method: str, path: str) -> None:
    message = check(await client.request(method, path), 404, None, None)
    assert message == f"Invalid URL ({method} {path})."


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", CHAT, "POST"), ("PUT", CHAT, "POST"), ("DELETE", CHAT, "POST"),
     ("POST", "/v1/models", "GET"), ("PATCH", "/v1/models/test-model", "GET")],
)  # fmt: skip
async def test_wrong_methods(client: httpx.AsyncClient, method: str, path: str, allow: str) -> None:
    response = await client.request(method, path)
    check(response, 405, None, None)
    assert response.headers["allow"] == allow


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, id="bad $ref"),
        pytest.param({"type": "object", "properties": {"a": {"$ref": "http://example.com/s"}}},
                     id="remote $ref, never fetched"),
        pytest.param({"$ref": "#"}, id="only itself"),
        pytest.param({"type": "object", "properties": {"a": {"type": "string", "pattern": "(["}}},
                     id="bad pattern"),
        pytest.param({"type": "object", "properties": {"a": {"maximum": float("nan")}}},
                     id="NaN bound"),
        pytest.param(nested_schema(90), id="90 levels deep"),
    ],
)  # fmt: skip
async def test_hostile_response_schemas(grammars: GrammarCompiler, schema: dict[str, Any]) -> None:
    """Schemas that cannot be compiled are 400s on `response_format`, before any work starts."""
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    async with make_client(make_app(grammars=grammars)) as client:
        response = await client.post(CHAT, content=body(response_format=response_format))
    check(response, 400, None, "response_format")
