"""Every client error comes back as OpenAI's envelope with the right status, type, code, param,
and the headers that say what it means (Retry-After, x-should-retry, Allow)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from starlette.exceptions import HTTPException

from headrace.api.errors import error_response
from headrace.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    EngineOverloadedError,
    HeadraceError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from tests.fakes import chat_body, make_app, make_client
from tests.schema import validate

INVALID = "invalid_request_error"
MISSING = "missing_required_parameter"
CHAT = "/v1/chat/completions"


def check(response: httpx.Response, status: int, code: str | None, param: str | None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    validate(body, "ErrorResponse")
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == (
        INVALID if status < 500 else "server_error", code, param
    )  # fmt: skip
    assert error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (chat_body(model="gpt-5"), 404, "model_not_found", "model"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, MISSING, "model"),
        ({"model": "test-model"}, 400, MISSING, "messages"),
        (chat_body(messages=[]), 400, "empty_array", "messages"),
        (chat_body(messages=[{"role": "robot", "content": "hi"}]), 400, "invalid_value",
         "messages.0.role"),
        (chat_body(messages=[{"role": "user"}]), 400, MISSING, "messages.0.content"),
        (chat_body(temperature=3), 400, "decimal_above_max_value", "temperature"),
        (chat_body(top_p=0), 400, "decimal_below_min_value", "top_p"),
        (chat_body(n=129), 400, "integer_above_max_value", "n"),
        (chat_body(max_tokens=0), 400, "integer_below_min_value", "max_tokens"),
        (chat_body(max_completion_tokens=0), 400, "integer_below_min_value",
         "max_completion_tokens"),
        (chat_body(stop=["a", "b", "c", "d", "e"]), 400, "array_above_max_length", "stop"),
        (chat_body(logprobs=True, top_logprobs=21), 400, "integer_above_max_value",
         "top_logprobs"),
        (chat_body(top_logprobs=2), 400, None, "top_logprobs"),
        (chat_body(max_tokens=4, min_tokens=5), 400, None, "min_tokens"),
        (chat_body(max_tokens=1000), 400, "context_length_exceeded", "messages"),
        (chat_body(messages=[{"role": "user", "content": "x" * 300}]), 400,
         "context_length_exceeded", "messages"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
async def test_bad_chat_requests(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    status: int,
    code: str | None,
    param: str | None,
    stream: bool,
) -> None:
    check(await client.post(CHAT, json={**body, "stream": stream}), status, code, param)


async def test_stream_options_without_stream(client: httpx.AsyncClient) -> None:
    body = chat_body(stream_options={"include_usage": True})
    check(await client.post(CHAT, json=body), 400, None, "stream_options")


@pytest.mark.parametrize(
    "content", [b'{"model": "test-model", "messages": [', b"", b"not json", b"\xff\xfe"]
)
async def test_malformed_json(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(CHAT, content=content)
    assert "could not parse the JSON body" in check(response, 400, None, None)


@pytest.mark.parametrize("body", [[], [1], "text", 3, None])
async def test_body_not_an_object(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post(CHAT, content=orjson.dumps(body))
    assert check(response, 400, None, None) == "The request body must be a JSON object."


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    message = check(await client.get("/v1/nothing"), 404, None, None)
    assert message == "Invalid URL (GET /v1/nothing)."


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    response = await client.get(CHAT)
    check(response, 405, None, None)
    assert response.headers["allow"] == "POST"


async def test_unknown_model_retrieval(client: httpx.AsyncClient) -> None:
    message = check(await client.get("/v1/models/gpt-5"), 404, "model_not_found", "model")
    assert message == "The model `gpt-5` does not exist or you do not have access to it."


async def test_fastapi_validation_errors_use_the_envelope() -> None:
    app = make_app()

    @app.get("/v1/echo")
    async def echo(limit: int) -> dict[str, int]:
        return {"limit": limit}

    async with make_client(app) as client:
        check(await client.get("/v1/echo", params={"limit": "many"}), 400, None, "limit")
        assert (await client.get("/v1/echo", params={"limit": "3"})).json() == {"limit": 3}


async def test_other_http_exceptions_keep_their_status_and_headers() -> None:
    app = make_app()

    @app.get("/v1/conflict")
    async def conflict() -> None:
        raise HTTPException(409, detail="Busy elsewhere.", headers={"x-why": "because"})

    @app.get("/v1/gateway")
    async def gateway() -> None:
        raise HTTPException(502, detail="Upstream said something private.")

    async with make_client(app) as client:
        response = await client.get("/v1/conflict")
        assert check(response, 409, None, None) == "Busy elsewhere."
        assert response.headers["x-why"] == "because"
        response = await client.get("/v1/gateway")
        assert "private" not in check(response, 500, None, None)


class FlakyModelError(ModelNotFoundError):
    """A kind the status table does not list: it takes its nearest listed class's status."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestError("bad"), 400),
        (ContextLengthExceededError("long"), 400),
        (AuthenticationError("who"), 401),
        (NotFoundError("gone"), 404),
        (ModelNotFoundError("gpt-5"), 404),
        (FlakyModelError("gpt-5"), 404),
        (MethodNotAllowedError("no", allowed=["POST"]), 405),
        (RequestTooLargeError(1024), 413),
        (UnsupportedMediaTypeError("text/plain"), 415),
        (RateLimitError("slow down", limit="requests", retry_after=1.0), 429),
        (ServiceUnavailableError("later"), 503),
        (EngineOverloadedError(1.0), 503),
        (InternalError(), 500),
        (HeadraceError("unlisted"), 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, HeadraceError) else str(value),
)
def test_each_kind_has_its_status(error: HeadraceError, status: int) -> None:
    assert error_response(error).status_code == status


@pytest.mark.parametrize(
    ("error", "headers"),
    [
        (RateLimitError("x", limit="tokens", retry_after=20.0),
         {"retry-after": "20", "retry-after-ms": "20000"}),
        (RateLimitError("x", limit="tokens", retry_after=0.1),
         {"retry-after": "1", "retry-after-ms": "100"}),
        (RateLimitError("x", limit="tokens", should_retry=False), {"x-should-retry": "false"}),
        (ServiceUnavailableError("x", should_retry=True), {"x-should-retry": "true"}),
        (EngineOverloadedError(2.0), {"retry-after": "2", "retry-after-ms": "2000"}),
        (MethodNotAllowedError("x", allowed=["GET", "POST"]), {"allow": "GET, POST"}),
        (InvalidRequestError("x"), {}),
    ],
)  # fmt: skip
def test_headers_come_from_what_the_error_means(
    error: HeadraceError, headers: dict[str, str]
) -> None:
    response = error_response(error)
    extra = {
        name: value
        for name, value in response.headers.items()
        if name not in {"content-length", "content-type"}
    }
    assert extra == headers
