"""The app under uvicorn, where SIGTERM drains it before the server stops.

uvicorn alone, on SIGTERM, closes its listening socket at once and waits for open connections;
a load balancer then sees refused connections rather than a server saying it is leaving. Here
the first SIGTERM runs the app's Drain while uvicorn still serves (new requests get a 503,
/health says "draining"), and only then lets uvicorn stop; the process exits with status 0.
A second SIGTERM, or SIGINT, stops the server at once, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from headrace.api.drain import Drain
from headrace.config import ServerConfig

__all__ = ["serve"]

# Seconds uvicorn waits, once drained, for the last responses to be written before it cuts them.
_CLOSE_TIMEOUT_S = 5


def serve(
    app: FastAPI,
    drain: Drain,
    server: ServerConfig,
    *,
    log_level: str,
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Serve `app` where `server` says (over HTTPS with its key and certificate) until SIGTERM
    has drained it (`server.drain_timeout` seconds at most) or SIGINT; `ready` is called once
    it listens."""
    # uvicorn's records go to the root logger's handler, in the server's format; its access log
    # is off, as the app logs one line per request itself.
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        ssl_keyfile=server.ssl_keyfile,
        ssl_certfile=server.ssl_certfile,
        log_level=log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=_CLOSE_TIMEOUT_S,
    )
    _DrainingServer(config, drain, server.drain_timeout, ready).run()


class _DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        drain: Drain,
        drain_timeout: float,
        ready: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_timeout = drain_timeout
        self._ready = ready
        # The drain under way, once SIGTERM has started it.
        self._draining: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._drain.draining:
            super().handle_exit(sig, frame)
            return
        self._drain.draining = True  # a second SIGTERM, even before the drain starts, stops
        # A signal handler runs between two steps of the loop: hand it the drain as a callback.
        asyncio.get_running_loop().call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self._drain.run(self._drain_timeout)
        self.should_exit = True
