"""Request parsing turns every malformed body into one clear 400; responses dump what was given."""

from __future__ import annotations

import orjson
import pytest

from headrace.errors import InvalidRequestError
from headrace.serving import ChatCompletionChunk, dump, parse_chat_request
from headrace.serving.responses import ChunkChoice, Delta
from tests.fakes import chat_body


def refusal(body: bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(body)
    assert caught.value.type == "invalid_request_error"
    return caught.value


def test_valid_request_with_extras_and_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = chat_body(tools=tools, tool_choice="auto", stop="x", foo=1, presence_penalty=1.5)
    request = parse_chat_request(orjson.dumps(body))
    assert request.model_extra == {"foo": 1}
    assert request.tools is not None and request.tools[0].function.name == "f"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b'{"model": "m", "messages": [', None, "We could not parse the JSON body"),
        (b"", None, "We could not parse the JSON body"),
        (b"[1, 2]", None, "The request body must be a JSON object."),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model",
         "Missing required parameter: 'model'."),
        (b'{"model": "m"}', "messages", "Missing required parameter: 'messages'."),
        (b'{"model": "m", "messages": []}', "messages", "Invalid value for 'messages'"),
        (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role",
         "Invalid value for 'messages.0.role'"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages.0.content",
         "Input should be a valid string; or Input should be a valid array"),
        (b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
         "messages.0.content.0.type", "Input should be 'text'"),
    ],
)  # fmt: skip
def test_malformed_bodies(body: bytes, param: str | None, message: str) -> None:
    error = refusal(body)
    assert error.param == param
    assert message in error.message


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("temperature", 3, "temperature"),
        ("temperature", -0.5, "temperature"),
        ("top_p", 0, "top_p"),
        ("top_p", 1.5, "top_p"),
        ("n", 0, "n"),
        ("max_tokens", 0, "max_tokens"),
        ("max_tokens", "5", "max_tokens"),
        ("max_completion_tokens", 0, "max_completion_tokens"),
        ("stop", ["a", "b", "c", "d", "e"], "stop"),
        ("stop", [1], "stop.0"),
        ("stream", "yes", "stream"),
        ("presence_penalty", 2.5, "presence_penalty"),
        ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
        ("tool_choice", "sometimes", "tool_choice"),
    ],
)
def test_bad_parameters_name_the_param(field: str, value: object, param: str) -> None:
    error = refusal(orjson.dumps(chat_body(**{field: value})))
    assert error.param == param
    assert error.message.startswith(f"Invalid value for '{param}': ")


def test_dump_writes_only_given_fields() -> None:
    choice = ChunkChoice(index=0, delta=Delta(content="x"), finish_reason=None, logprobs=None)
    chunk = ChatCompletionChunk(
        id="c", object="chat.completion.chunk", created=1, model="m", choices=[choice]
    )
    assert b"usage" not in dump(chunk) and b"role" not in dump(chunk)
    chunk.usage = None
    assert orjson.loads(dump(chunk))["usage"] is None
    assert orjson.loads(dump(chunk))["choices"][0] == {
        "index": 0, "delta": {"content": "x"}, "finish_reason": None, "logprobs": None,
    }  # fmt: skip
