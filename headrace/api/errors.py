"""The one place errors become HTTP responses: the OpenAI envelope with the right status.

Each kind of HeadraceError has its status here, and its headers come from what it says a client
should do: Retry-After (and OpenAI's retry-after-ms) from `retry_after`, x-should-retry from
`should_retry`, Allow from a 405's allowed methods. Everything that can go wrong is first made a
HeadraceError: the service's own errors, FastAPI's validation errors, Starlette's 404/405, and
any unexpected exception (InternalError: a 500 that says nothing of its cause; the request log
middleware sends it, and the traceback goes to the log). A 500's message ends with the
request's id, as OpenAI's do, for the client to quote (other messages are OpenAI's words, and
every response carries the id in x-request-id); the envelope is OpenAI's, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route

from headrace.api.request_context import current_request_id
from headrace.errors import (
    AuthenticationError,
    HeadraceError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from headrace.serving import invalid_request_from_validation

__all__ = ["error_body", "error_response", "every_route", "install_error_handlers", "status_of"]

# The HTTP status of each kind of error; an error takes that of its nearest class listed here
# (along its MRO), 500 when none is.
_STATUSES: Mapping[type[HeadraceError], int] = {
    InvalidRequestError: 400,
    AuthenticationError: 401,
    NotFoundError: 404,
    MethodNotAllowedError: 405,
    RequestTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    RateLimitError: 429,
    ServiceUnavailableError: 503,
}
_DEFAULT_STATUS = 500

# Where FastAPI found a parameter; the first element of its error locations.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def error_body(error: HeadraceError) -> bytes:
    """The error's JSON envelope; a 500's message ends with the id of the request being served,
    if one is."""
    envelope = error.to_dict()
    request_id = current_request_id()
    if request_id is not None and _status(error) == _DEFAULT_STATUS:
        envelope["error"]["message"] += f" (request id: {request_id})"
    return orjson.dumps(envelope)


def error_response(
    error: HeadraceError, *, status: int | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """The error as a response; `status` and `headers`, when given, replace those of its kind."""
    return Response(
        error_body(error),
        status_code=status if status is not None else _status(error),
        headers=dict(headers) if headers is not None else _headers(error),
        media_type="application/json",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HeadraceError, _on_headrace_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)


def status_of(error: HeadraceError) -> int:
    """The HTTP status of the error's kind (the batch runner's error lines carry it too)."""
    return _status(error)


def _status(error: HeadraceError) -> int:
    for kind in type(error).__mro__:
        if kind in _STATUSES:
            return _STATUSES[kind]
    return _DEFAULT_STATUS


def _headers(error: HeadraceError) -> dict[str, str]:
    headers = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(math.ceil(error.retry_after))
        headers["retry-after-ms"] = str(math.ceil(error.retry_after * 1000))
    if error.should_retry is not None:
        headers["x-should-retry"] = "true" if error.should_retry else "false"
    if isinstance(error, MethodNotAllowedError) and error.allowed:
        headers["allow"] = ", ".join(error.allowed)
    return headers


async def _on_headrace_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HeadraceError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{**error, "loc": _without_source(error["loc"])} for error in exc.errors()]
    return error_response(invalid_request_from_validation(errors))


def _without_source(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return loc[1:] if loc and loc[0] in _SOURCES else loc


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return error_response(NotFoundError(f"Invalid URL ({where})."))
    if exc.status_code == 405:
        allowed = _allow(exc, request)
        not_allowed = MethodNotAllowedError(f"Method not allowed ({where}).", allowed=allowed)
        return error_response(not_allowed)
    if exc.status_code < 500:
        # Starlette's other client errors keep their status and headers.
        invalid = InvalidRequestError(str(exc.detail))
        return error_response(invalid, status=exc.status_code, headers=exc.headers or {})
    return error_response(InternalError())


def _allow(exc: HTTPException, request: Request) -> list[str]:
    """The methods of every route on the request's path: Starlette's 405 names only those of
    the first route it found there (GET of /v1/files/{id}, not its DELETE)."""
    allowed = {method.strip() for method in (exc.headers or {}).get("Allow", "").split(",")}
    for route in every_route(request.app.routes):
        if route.path_regex.fullmatch(request.url.path) and route.methods:
            allowed |= route.methods
    return sorted(allowed - {""})


def every_route(routes: Sequence[BaseRoute]) -> Iterator[Route]:
    """Every route, those of included routers too."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        else:  # FastAPI keeps an included router whole, as its `original_router`
            router = getattr(route, "original_router", None)
            yield from every_route(router.routes if router is not None else ())
