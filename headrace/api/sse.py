"""Server-sent events: each object as `data: <json>\n\n`, then `data: [DONE]\n\n`.

An error once the stream has begun goes out as `data: {"error": {...}}\n\n` and ends the stream
(no [DONE]); the OpenAI SDKs raise it as an APIError.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from headrace.api.errors import error_body
from headrace.errors import HeadraceError, InternalError
from headrace.serving import dump

__all__ = ["EventStreamResponse"]

logger = logging.getLogger("headrace.api")

_DONE = b"data: [DONE]\n\n"


class EventStreamResponse(StreamingResponse):
    """Streams response objects as SSE; a client that leaves closes the objects' generator at once.

    Closing it is what aborts the engine request, so this response makes sure it happens
    promptly: it always listens for the disconnect (Starlette does so only for servers older than
    ASGI 2.4 and otherwise waits for the next write to fail, which for a queued request may be
    long), and it closes the generator itself rather than leave it to the garbage collector.
    """

    media_type = "text/event-stream"

    def __init__(self, objects: AsyncGenerator[BaseModel, None]) -> None:
        # The framed events; closing them closes `objects`.
        self._events = _events(objects)
        super().__init__(
            self._events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        except* OSError:
            pass  # the client left mid-write (ASGI 2.4 servers); nobody is left to tell

    async def stream_response(self, send: Send) -> None:
        async with aclosing(self._events):
            await super().stream_response(send)


async def _events(objects: AsyncGenerator[BaseModel, None]) -> AsyncGenerator[bytes, None]:
    async with aclosing(objects):
        try:
            async for item in objects:
                yield b"data: " + dump(item) + b"\n\n"
        except HeadraceError as error:
            yield b"data: " + error_body(error) + b"\n\n"
            return
        except Exception:
            logger.exception("stream failed")
            yield b"data: " + error_body(InternalError()) + b"\n\n"
            return
    yield _DONE
