"""Overload and size limits are answered at once: 503 with Retry-After, 413, 415; a long
prompt does not hold up the server while it is tokenized."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import orjson
import pytest

from headrace.api import create_app
from tests.api.test_errors import CHAT, check
from tests.fakes import (
    FakeEngine,
    FakeServed,
    FakeTokenizer,
    chat_body,
    make_app,
    make_client,
)

MiB = 2**20


def padded(size: int) -> bytes:
    """A valid request of exactly `size` bytes (`user`, an id ignored, holds the padding)."""
    start = orjson.dumps(chat_body(user=""))
    return start[:-2] + b"x" * (size - len(start)) + b'"}'


@pytest.mark.parametrize("stream", [False, True])
async def test_a_full_queue_gets_503_with_retry_after(engine: FakeEngine, stream: bool) -> None:
    engine.waiting = 2
    async with make_client(make_app(engine, max_waiting=2)) as client:
        response = await client.post(CHAT, json=chat_body(stream=stream))
    message = check(response, 503, "engine_overloaded", None)
    assert message == "The engine is currently overloaded, please try again later."
    assert response.headers["retry-after"] == "1"
    assert engine.prompts == {}


async def test_below_the_limit_requests_are_queued(engine: FakeEngine) -> None:
    engine.waiting = 1
    async with make_client(make_app(engine, max_waiting=2)) as client:
        assert (await client.post(CHAT, json=chat_body())).status_code == 200


async def test_a_batch_backlog_does_not_count_against_the_limit(engine: FakeEngine) -> None:
    engine.waiting, engine.batch_waiting = 1000, 999  # one interactive request waits
    async with make_client(make_app(engine, max_waiting=2)) as client:
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
        engine.waiting = 1001  # two interactive ones wait
        check(await client.post(CHAT, json=chat_body()), 503, "engine_overloaded", None)


async def test_the_default_limit_is_256_waiting(engine: FakeEngine) -> None:
    engine.waiting = 256
    async with make_client(make_app(engine)) as client:
        check(await client.post(CHAT, json=chat_body()), 503, "engine_overloaded", None)


async def test_a_body_at_the_limit_is_read(engine: FakeEngine) -> None:
    async with make_client(make_app(engine, max_body_bytes=MiB)) as client:
        assert (await client.post(CHAT, content=padded(MiB))).status_code == 200


async def test_a_declared_length_over_the_limit_is_refused_unread(engine: FakeEngine) -> None:
    async with make_client(make_app(engine, max_body_bytes=MiB)) as client:
        response = await client.post(CHAT, content=padded(MiB + 1))
    message = check(response, 413, "request_too_large", None)
    assert message == f"The request body is too large: the limit is {MiB} bytes."


async def test_ten_megabytes_are_refused_by_default(client: httpx.AsyncClient) -> None:
    check(await client.post(CHAT, content=padded(10**7)), 413, "request_too_large", None)


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(engine: FakeEngine) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):  # 100 MiB, were it all read
            sent += 1
            yield b" " * MiB

    async with make_client(make_app(engine, max_body_bytes=8 * MiB)) as client:
        response = await client.post(CHAT, content=chunks())
    check(response, 413, "request_too_large", None)
    assert sent == 9


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_bodies_that_are_not_json_get_415(
    client: httpx.AsyncClient, content_type: str
) -> None:
    content = orjson.dumps(chat_body())
    response = await client.post(CHAT, content=content, headers={"content-type": content_type})
    message = check(response, 415, "unsupported_content_type", None)
    assert message.startswith(f"Unsupported content type: '{content_type}'.")


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/json; charset=utf-8"}, {"content-type": "Application/JSON"}, {}],
)
async def test_json_or_no_declared_type_is_read(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(CHAT, content=orjson.dumps(chat_body()), headers=headers)
    assert response.status_code == 200, response.text


class SlowTokenizer(FakeTokenizer):
    """Takes a second over every prompt, as a real tokenizer does over megabytes."""

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[int]:
        time.sleep(1.0)
        return super().apply_chat_template(messages, **options)


async def test_tokenizing_a_prompt_leaves_the_loop_free() -> None:
    async with make_client(create_app(FakeServed(tokenizer=SlowTokenizer()))) as client:
        started = time.perf_counter()
        chat = asyncio.create_task(client.post(CHAT, json=chat_body()))
        await asyncio.sleep(0.1)  # the chat request is being tokenized now
        assert (await client.get("/health")).status_code == 200
        assert time.perf_counter() - started < 0.5 and not chat.done()
        assert (await chat).status_code == 200
