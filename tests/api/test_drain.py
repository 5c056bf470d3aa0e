"""Draining: new requests get a 503, running ones finish, what is left at the timeout is ended."""

from __future__ import annotations

import asyncio

import httpx

from headrace.api import create_app
from headrace.api.drain import Drain
from tests.api.sse import events
from tests.fakes import REPLY, FakeEngine, FakeServed, chat_body, make_client
from tests.schema import validate


def draining_client(engine: FakeEngine) -> tuple[httpx.AsyncClient, Drain]:
    drain = Drain(engine)
    return make_client(create_app(FakeServed(engine=engine), drain=drain)), drain


def content(response: httpx.Response) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in events(response))


async def test_a_draining_server_refuses_new_requests_and_says_so() -> None:
    client, drain = draining_client(FakeEngine())
    async with client:
        await drain.run(timeout=1)
        refused = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        health = await client.get("/health")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    validate(refused.json(), "ErrorResponse")
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert health.status_code == 503 and health.json()["status"] == "draining"


async def test_running_requests_finish_before_the_drain_ends() -> None:
    engine = FakeEngine(step_delay=0.01)
    client, drain = draining_client(engine)
    async with client:
        stream = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat_body(stream=True))
        )
        whole = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
        await engine.started.wait()
        drained = asyncio.create_task(drain.run(timeout=30))
        await asyncio.sleep(0)  # the drain begins
        refused = await client.post("/v1/chat/completions", json=chat_body())
        assert not stream.done() and not whole.done()
        await drained
        assert stream.done() and whole.done() and drain.in_flight == 0
    assert refused.status_code == 503
    assert content(stream.result()) == REPLY
    assert whole.result().json()["choices"][0]["message"]["content"] == REPLY
    assert engine.aborted == []


async def test_requests_left_at_the_timeout_are_ended() -> None:
    engine = FakeEngine(step_delay=0.05)
    client, drain = draining_client(engine)
    async with client:
        stream = asyncio.create_task(
            client.post("/v1/chat/completions", json=chat_body(stream=True))
        )
        whole = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
        await engine.started.wait()
        await drain.run(timeout=0.1)
        assert stream.done() and whole.done()
    error = events(stream.result(), done=False)[-1]
    assert error["error"]["code"] == "service_unavailable"
    assert whole.result().status_code == 503
    assert engine.running == 0
