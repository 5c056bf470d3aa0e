"""A cap on request body size, enforced while the body arrives rather than after."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace.api.errors import error_response
from headrace.errors import RequestTooLargeError

__all__ = ["BodyLimit", "declared_length"]


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, and is never held in memory whole.

    A declared Content-Length over the limit is refused before any of the body is read; a body
    without one (chunked) is counted as it comes, and refused once it passes the limit. The
    paths in `exempt` (uploads) enforce larger limits of their own.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: Collection[str] = ()) -> None:
        self._app = app
        # Largest body accepted, in bytes.
        self._max_bytes = max_bytes
        # Paths whose routes limit their bodies themselves.
        self._exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self._app(scope, receive, send)
            return
        if declared_length(scope) > self._max_bytes:
            await error_response(RequestTooLargeError(self._max_bytes))(scope, receive, send)
            return
        await self._app(scope, self._counted(receive), send)

    def _counted(self, receive: Receive) -> Receive:
        """`receive`, raising RequestTooLargeError once the body passes the limit."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    raise RequestTooLargeError(self._max_bytes)
            return message

        return counted


def declared_length(scope: Scope) -> int:
    """The Content-Length header's value; 0 when absent or not a number."""
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else 0
