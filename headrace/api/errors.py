"""The one place errors become HTTP responses: the OpenAI envelope with the right status.

Everything that can go wrong is first made a HeadraceError: the service's own errors, FastAPI's
validation errors, Starlette's 404/405, and any unexpected exception (a 500 that says nothing
of its cause; the traceback goes to the log).
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from headrace.serving import (
    HeadraceError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    invalid_request_from_validation,
)

__all__ = ["error_body", "error_response", "install_error_handlers"]

# Where FastAPI found a parameter; the first element of its error locations.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


def error_body(error: HeadraceError) -> bytes:
    """The error's JSON envelope."""
    return orjson.dumps(error.to_dict())


def error_response(error: HeadraceError) -> Response:
    return Response(
        error_body(error),
        status_code=error.status,
        headers=dict(error.headers),
        media_type="application/json",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HeadraceError, _on_headrace_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


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
    error: HeadraceError
    if exc.status_code == 404:
        error = NotFoundError(f"Invalid URL ({where}).")
    elif exc.status_code == 405:
        error = MethodNotAllowedError(f"Method not allowed ({where}).", headers=exc.headers)
    elif exc.status_code < 500:
        error = InvalidRequestError(str(exc.detail), status=exc.status_code, headers=exc.headers)
    else:
        error = InternalError()
    return error_response(error)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises `exc` after this response is sent, so the server logs the traceback.
    return error_response(InternalError())
