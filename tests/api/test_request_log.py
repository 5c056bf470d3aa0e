"""x-request-id on every response, the client's own when usable; one log line per request."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from headrace.auth import Access, KeyStore
from tests.api.sse import events
from tests.fakes import MODEL_NAMES, REPLY, FakeEngine, chat_body, make_app, make_client

CHAT = "/v1/chat/completions"
MADE_ID = re.compile(r"req_[0-9a-f]{32}")
LOGGER = "headrace.requests"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", CHAT, chat_body(), 200),
        ("POST", CHAT, chat_body(stream=True), 200),
        ("POST", CHAT, {"model": MODEL_NAMES[0]}, 400),
        ("GET", "/no/such/route", None, 404),
        ("DELETE", CHAT, None, 405),
        ("GET", "/health", None, 200),
        ("GET", "/metrics", None, 200),
    ],
    ids=["whole", "stream", "400", "404", "405", "health", "metrics"],
)
async def test_every_response_carries_an_id(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status
    assert MADE_ID.fullmatch(response.headers["x-request-id"])


async def test_a_refused_key_gets_an_id_too() -> None:
    async with make_client(make_app(api_keys=["sk-only"])) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 401
    assert MADE_ID.fullmatch(response.headers["x-request-id"])


async def test_ids_differ(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("given", ["trace-42", "a b:c/d", "x" * 128])
async def test_the_clients_id_is_echoed(client: httpx.AsyncClient, given: str) -> None:
    response = await client.post(CHAT, json=chat_body(stream=True), headers={"X-Request-Id": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "x" * 129, "tab\there", "caf\u00e9"])
async def test_an_unusable_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    headers = [(b"x-request-id", given.encode("latin-1"))]
    response = await client.get("/v1/models", headers=headers)
    assert MADE_ID.fullmatch(response.headers["x-request-id"])


async def test_the_openai_sdk_exposes_the_id() -> None:
    client = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="unused",
        http_client=make_client(make_app()),  # type: ignore[arg-type]
        max_retries=0,
    )
    completion = await client.chat.completions.create(
        model=MODEL_NAMES[0], messages=[{"role": "user", "content": "Hi"}]
    )
    assert MADE_ID.fullmatch(completion._request_id or "")
    given = await client.chat.completions.create(
        model=MODEL_NAMES[0],
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"X-Request-Id": "mine-1"},
    )
    assert given._request_id == "mine-1"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_500_names_the_request(stream: bool) -> None:
    app = make_app(FakeEngine(raise_after=3))
    async with make_client(app, raise_app_exceptions=False) as client:
        response = await client.post(CHAT, json=chat_body(stream=stream))
    request_id = response.headers["x-request-id"]
    error = events(response, done=False)[-1] if stream else response.json()
    assert error["error"]["message"].endswith(f" (request id: {request_id})")
    assert set(error["error"]) == {"message", "type", "param", "code"}


async def test_other_errors_keep_openais_words(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/not-served")
    assert "request id" not in response.json()["error"]["message"]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


async def test_one_line_per_request(
    caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    content = "a secret prompt"
    body = chat_body(messages=[{"role": "user", "content": content}], stream=True)
    response = await client.post(CHAT, json=body, headers={"X-Request-Id": "line-1"})
    chunks = events(response)
    (line,) = request_lines(caplog)
    fields = line.__dict__
    assert fields["request_id"] == "line-1"
    assert fields["key_id"] == "-"
    assert (fields["method"], fields["route"], fields["status"]) == ("POST", CHAT, 200)
    assert fields["model"] == MODEL_NAMES[0]
    assert fields["prompt_tokens"] > len(content)
    assert (fields["cached_tokens"], fields["completion_tokens"]) == (0, len(REPLY) + 1)
    assert fields["ttft_ms"] >= 0 and fields["duration_ms"] >= fields["ttft_ms"]
    assert fields["finish_reason"] == "stop"
    message = line.getMessage()
    assert message.startswith("request_id=line-1 key_id=- method=POST route=/v1/chat/completions")
    assert "finish_reason=stop" in message
    assert content not in message and "Hello" not in message and "prompt" not in fields
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_line_names_the_key_by_its_id(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    store = KeyStore(tmp_path / "keys.sqlite3")
    issued = store.create()
    async with make_client(make_app(access=Access(store=store))) as client:
        await client.get("/v1/models", headers={"Authorization": f"Bearer {issued.secret}"})
    (line,) = request_lines(caplog)
    assert line.__dict__["key_id"] == issued.key.id
    assert issued.secret not in line.getMessage()
    assert "model" not in line.__dict__  # no completion ran


async def test_log_requests_adds_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    async with make_client(make_app(log_requests=True)) as client:
        body = chat_body(messages=[{"role": "user", "content": "a secret prompt"}])
        await client.post(CHAT, json=body)
    (line,) = request_lines(caplog)
    assert "a secret prompt" in line.__dict__["prompt"][0]
    assert line.__dict__["output"] == (REPLY,)
    assert orjson.dumps(REPLY).decode() in line.getMessage()
