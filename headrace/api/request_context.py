"""The HTTP request being served, as anything its handling calls can find it: its id, and the
record of the completion it ran (for its log line).

The request log middleware opens a context for each request; the handling's tasks and worker
threads inherit it (a streamed body included), so error envelopes carry the id and the services'
observer can leave the record where the middleware finds it once the response has ended.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.datastructures import Headers

from headrace.serving import RequestRecord

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestContext",
    "current_request_id",
    "remember",
    "request_id_of",
    "serving",
]

# The header that carries a request's id, both ways.
REQUEST_ID_HEADER = "x-request-id"

# The longest X-Request-Id taken from a client; a longer one is replaced.
_MAX_CLIENT_ID = 128


@dataclass
class RequestContext:
    # The request's id: the client's X-Request-Id, else req_<hex>; its response's x-request-id.
    request_id: str
    # The record of the completion it ran, once that has ended; None until then, or for other
    # routes.
    record: RequestRecord | None = None


# The request the running code serves; None outside any (the batch runner's requests).
_current: ContextVar[RequestContext | None] = ContextVar("headrace_request", default=None)


@contextmanager
def serving(context: RequestContext) -> Iterator[RequestContext]:
    """Makes `context` the current request's for the block (and what it starts)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current_request_id() -> str | None:
    """The id of the request being served; None outside one."""
    context = _current.get()
    return None if context is None else context.request_id


def remember(record: RequestRecord) -> None:
    """Keeps a completion's record for the log line of the request that ran it, if one did."""
    context = _current.get()
    if context is not None:
        context.record = record


def request_id_of(headers: Headers) -> str:
    """The client's X-Request-Id when it is printable ASCII of at most 128 characters, else a
    new req_<32 hex digits>."""
    given = headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(given) <= _MAX_CLIENT_ID and given.isascii() and given.isprintable():
        return given
    return f"req_{secrets.token_hex(16)}"
