"""Bearer API keys and rate limits over HTTP.

Every request but /health and /metrics goes through `KeyCheck`, which admits it by its key and
counts it; routes find what its key may do with `grant_of`. Every response to a counted key
carries OpenAI's `x-ratelimit-*` headers, errors and streams included.
"""

from __future__ import annotations

import math

from fastapi import Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headrace.api.errors import error_response
from headrace.auth import REPORTED_LIMITS, Access, Grant, LimitStatus
from headrace.errors import HeadraceError

__all__ = ["RATE_LIMIT_HEADERS", "KeyCheck", "grant_of"]

# The parts of a limit its headers tell.
_PARTS = ("limit", "remaining", "reset")
# Every rate-limit header a response may carry.
RATE_LIMIT_HEADERS = tuple(
    f"x-ratelimit-{part}-{name}" for name in REPORTED_LIMITS for part in _PARTS
)

# Open to all: load balancers and orchestrators probe /health, and Prometheus scrapes /metrics
# (as vLLM's), without a key.
_OPEN_PATHS = frozenset({"/health", "/metrics"})


class KeyCheck:
    """ASGI middleware: admits each request by its bearer key, or answers 401 or 429 itself."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self._app = app
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        try:
            grant = self._access.authenticate(_bearer_key(Headers(scope=scope)))
        except HeadraceError as error:
            await error_response(error)(scope, receive, send)
            return
        send = self._with_limit_headers(send, grant)
        try:
            self._access.take_request(grant)
        except HeadraceError as error:
            await error_response(error)(scope, receive, send)
            return
        scope.setdefault("state", {})["grant"] = grant
        await self._app(scope, receive, send)

    def _with_limit_headers(self, send: Send, grant: Grant) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for status in self._access.limit_status(grant):
                    headers.update(_limit_headers(status))
            await send(message)

        return send_with_headers


def grant_of(request: Request) -> Grant:
    """What the request's key may do, as KeyCheck found it."""
    grant = request.state.grant
    assert isinstance(grant, Grant), "KeyCheck admits every request a route sees"
    return grant


def _bearer_key(headers: Headers) -> str | None:
    header = headers.get("authorization")
    if header is None:
        return None
    scheme, _, key = header.partition(" ")
    # Another scheme shows no key of ours; the empty key matches none.
    return key.strip() if scheme.lower() == "bearer" else ""


def _limit_headers(status: LimitStatus) -> dict[str, str]:
    """OpenAI's headers for one limit, e.g. x-ratelimit-reset-tokens: 6m0s."""
    values = (str(status.limit), str(status.remaining), duration(status.reset))
    return {
        f"x-ratelimit-{part}-{status.name}": value
        for part, value in zip(_PARTS, values, strict=True)
    }


def duration(seconds: float) -> str:
    """A duration as Go writes it, as OpenAI's reset headers do: 0s, 120ms, 8.64s, 6m0s."""
    millis = math.ceil(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, millis = divmod(millis, 60_000)
    text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text
