"""A client that goes away aborts its engine request at once: streaming or whole, queued or not.

httpx's in-process transport only reports a disconnect after the response is complete, so these
tests speak ASGI to the app directly.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.types import Message

from headrace.api import create_app
from headrace.engine.async_engine import AsyncEngine
from headrace.serving.runtime import Runtime
from headrace.text import Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.engine.factories import make_engine, make_model, wait_until_idle
from tests.fakes import MODEL_NAMES, REPLY, FakeEngine, chat_body, make_app, make_client
from tests.text.factories import make_tokenizer_dir


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


async def test_a_storm_of_cut_streams_on_the_real_engine(tmp_path: Path) -> None:
    tokenizer = Tokenizer.from_path(make_tokenizer_dir(tmp_path))
    model = make_model(vocab_size=tokenizer.vocab_size, max_position_embeddings=256)
    # Four sequences at a time and chunked prefill: streams are cut queued, prefilling, decoding.
    engine = AsyncEngine.build(
        lambda: make_engine(model, max_model_len=256, max_num_seqs=4, max_num_batched_tokens=32)
    )
    app = create_app(Runtime(engine, tokenizer, MODEL_NAMES, GrammarCompiler(tokenizer)))
    engine.start()
    rng = random.Random(0)
    words = REPLY.split()
    clients = []
    for _ in range(200):
        text = " ".join(rng.choices(words, k=rng.randrange(1, 40)))
        body = chat_body(stream=True, max_tokens=12, messages=[{"role": "user", "content": text}])
        client = Client(orjson.dumps(body), leave_after_bodies=rng.randrange(1, 16))
        if rng.random() < 0.2:
            client.gone.set()  # gone before the response begins
        clients.append(client)
    try:
        calls = (app(scope("2.3"), client.receive, client.send) for client in clients)
        await asyncio.wait_for(asyncio.gather(*calls), 20)
        await wait_until_idle(engine)
        async with make_client(app) as http:
            response = await http.post("/v1/chat/completions", json=chat_body(max_tokens=5))
    finally:
        engine.shutdown()
    finished = sum(b"[DONE]" in client.text() for client in clients)
    assert 0 < finished < len(clients)  # some ran to the end; the others were cut
    assert response.json()["usage"]["completion_tokens"] <= 5
