"""Graceful shutdown: refuse new requests, let the running ones finish, end what is left.

While draining, every /v1 route answers 503 with Retry-After and /health says "draining" with a
503, so load balancers send elsewhere; requests already in flight run on. When none is left, or
the drain timeout has passed and the engine has ended the rest (finish_reason "abort", which
clients see as a 503 error), the drain is over and the server may stop.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from headrace.api.errors import error_response
from headrace.engine.client import EngineClient
from headrace.errors import ServiceUnavailableError

__all__ = ["Drain"]

logger = logging.getLogger("headrace.api")

# How long requests ended at the drain timeout get to send their last event.
_LAST_WORDS_S = 5.0
# How long a client refused while draining should wait before it retries (elsewhere, or here
# once the server is back).
_RETRY_AFTER_S = 1.0


class Drain:
    def __init__(self, engine: EngineClient) -> None:
        self._engine = engine
        # Whether the server has stopped taking requests.
        self.draining = False
        # /v1 requests being served; a stream counts until its last event is sent.
        self.in_flight = 0
        # Set while no /v1 request is in flight.
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, timeout: float) -> None:
        """Stop taking requests, wait up to `timeout` seconds for those in flight, end the rest."""
        self.draining = True
        logger.info("draining: %d requests in flight, %g s to finish", self.in_flight, timeout)
        if await self._idle_within(timeout):
            return
        logger.warning("drain timeout: ending %d requests", self.in_flight)
        self._engine.abort_all()
        await self._idle_within(_LAST_WORDS_S)

    def guard(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware around `app`: counts the /v1 requests in flight; refuses them once
        draining."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
                await app(scope, receive, send)
            elif self.draining:
                await error_response(_draining())(scope, receive, send)
            else:
                self._enter()
                try:
                    await app(scope, receive, send)
                finally:
                    self._leave()

        return guarded

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def _idle_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True


def _draining() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The server is shutting down; please retry.", retry_after=_RETRY_AFTER_S
    )
