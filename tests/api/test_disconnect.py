"""A client that goes away aborts its engine request at once: streaming or whole, queued or not.

httpx's in-process transport only reports a disconnect after the response is complete, so these
tests speak ASGI to the app directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.types import Message

from tests.fakes import FakeEngine, chat_body, make_app


@dataclass
class Client:
    """One HTTP request over ASGI; it disconnects when told to."""

    # The request body.
    body: bytes
    # Set to make receive() report http.disconnect.
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    # Every message the app sent.
    sent: list[Message] = field(default_factory=list)
    # Disconnect once this many body messages have arrived.
    leave_after_bodies: int | None = None
    # Then never return from send(), as a stalled socket would not.
    stall: bool = False
    _body_sent: bool = False

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        if self.leave_after_bodies is not None and len(bodies) >= self.leave_after_bodies:
            self.gone.set()
            if self.stall:
                await asyncio.Event().wait()

    def text(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def scope(spec_version: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


async def serve(engine: FakeEngine, client: Client, spec_version: str = "2.3") -> None:
    await asyncio.wait_for(make_app(engine)(scope(spec_version), client.receive, client.send), 5)


def assert_aborted(engine: FakeEngine) -> None:
    (request_id,) = engine.prompts
    assert engine.aborted == [request_id]
    assert engine.running == 0


@pytest.mark.parametrize("spec_version", ["2.0", "2.3", "2.4"])
async def test_disconnect_mid_stream(spec_version: str) -> None:
    engine = FakeEngine(step_delay=0.01)
    client = Client(orjson.dumps(chat_body(stream=True)), leave_after_bodies=4)
    await serve(engine, client, spec_version)
    assert_aborted(engine)
    assert engine.closed_early == engine.aborted
    assert b"[DONE]" not in client.text()


async def test_disconnect_while_writing() -> None:
    # The cancellation lands in send(), outside the chunk generators: they are closed anyway.
    engine = FakeEngine(step_delay=0.01)
    client = Client(orjson.dumps(chat_body(stream=True)), leave_after_bodies=3, stall=True)
    await serve(engine, client)
    assert_aborted(engine)


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_disconnect_before_the_first_token(spec_version: str) -> None:
    engine = FakeEngine(step_delay=60)  # queued for good
    client = Client(orjson.dumps(chat_body(stream=True)), leave_after_bodies=1)
    await serve(engine, client, spec_version)
    assert_aborted(engine)


async def test_disconnect_during_a_whole_response() -> None:
    engine = FakeEngine(step_delay=0.01)
    client = Client(orjson.dumps(chat_body()))
    asyncio.get_running_loop().call_later(0.05, client.gone.set)
    await serve(engine, client)
    assert_aborted(engine)
    assert engine.closed_early == engine.aborted
