"""With keys configured, every route but /health wants a right bearer key, within its limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from headrace.api.auth import duration
from headrace.auth import Access, KeyStore, Limits, RateLimiter
from tests.fakes import MODEL_NAMES, FakeClock, chat_body, make_app, make_client
from tests.schema import validate

KEYS = ("sk-one", "sk-two")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.sqlite3")


@pytest.fixture
def app(store: KeyStore, clock: FakeClock) -> FastAPI:
    limiter = RateLimiter(clock)
    return make_app(access=Access(KEYS, store, limiter=limiter, wall_clock=clock))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unauthorized(response: httpx.Response) -> str:
    assert response.status_code == 401
    if response.request.method == "HEAD":
        return ""
    validate(response.json(), "ErrorResponse")
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["param"] is None
    return str(error["message"])


def every_guarded_route(app: FastAPI) -> list[tuple[str, str]]:
    """Each method and path of the app but the open ones (/health, /metrics), path parameters
    filled in."""
    return [
        (method, re.sub(r"\{[^}]*\}", MODEL_NAMES[0], route.path))
        for route in _routes(app.routes)
        if route.path not in ("/health", "/metrics")
        for method in sorted(route.methods or ())
    ]


def _routes(routes: Sequence[BaseRoute]) -> Iterator[Route]:
    for route in routes:
        if isinstance(route, Route):
            yield route
        else:  # FastAPI (0.16x) keeps an included router whole, as its `original_router`
            yield from _routes(route.original_router.routes)  # type: ignore[attr-defined]


def test_the_walk_sees_the_api() -> None:
    walked = every_guarded_route(make_app())
    assert {("POST", "/v1/chat/completions"), ("GET", "/v1/models")} <= set(walked)
    assert ("GET", f"/v1/models/{MODEL_NAMES[0]}") in walked


@pytest.mark.parametrize("refused", ["none", "wrong", "revoked", "expired"])
async def test_every_route_refuses(
    app: FastAPI, client: httpx.AsyncClient, store: KeyStore, clock: FakeClock, refused: str
) -> None:
    revoked = store.create().secret
    store.revoke(store.list()[0].id)
    headers = {
        "none": {},
        "wrong": bearer("sk-hr-never-issued"),
        "revoked": bearer(revoked),
        "expired": bearer(store.create(expires=clock.now - 1).secret),
    }[refused]
    for method, path in every_guarded_route(app):
        response = await client.request(method, path, json=chat_body(), headers=headers)
        message = unauthorized(response)
        assert "sk-" not in response.text
        assert method == "HEAD" or message.startswith(
            {
                "none": "You didn't provide an API key.",
                "wrong": "Incorrect API key provided.",
                "revoked": "This API key has been revoked.",
                "expired": "This API key has expired.",
            }[refused]
        )


@pytest.mark.parametrize("header", ["Bearer sk-three", "Bearer sk-on", "Basic sk-one", "sk-one"])
async def test_wrong_static_key(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/v1/models", headers={"Authorization": header})
    assert unauthorized(response) == "Incorrect API key provided."
    assert "sk-" not in response.text


@pytest.mark.parametrize("header", ["Bearer sk-one", "Bearer sk-two", "bearer sk-one"])
async def test_right_static_key(client: httpx.AsyncClient, header: str) -> None:
    headers = {"Authorization": header}
    assert (await client.get("/v1/models", headers=headers)).status_code == 200
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert response.status_code == 200
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


async def test_a_stored_key(client: httpx.AsyncClient, store: KeyStore) -> None:
    headers = bearer(store.create().secret)
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert response.status_code == 200
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200


async def test_no_keys_configured_means_open() -> None:
    async with make_client(make_app()) as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/docs")).status_code == 200


async def test_a_key_sees_only_its_models(client: httpx.AsyncClient, store: KeyStore) -> None:
    headers = bearer(store.create(models=[MODEL_NAMES[1]]).secret)
    listing = await client.get("/v1/models", headers=headers)
    assert [model["id"] for model in listing.json()["data"]] == [MODEL_NAMES[1]]
    assert (await client.get(f"/v1/models/{MODEL_NAMES[1]}", headers=headers)).status_code == 200
    for response in (
        await client.get(f"/v1/models/{MODEL_NAMES[0]}", headers=headers),
        await client.post("/v1/chat/completions", json=chat_body(), headers=headers),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert error["message"] == (
            f"The model `{MODEL_NAMES[0]}` does not exist or you do not have access to it."
        )
    body = chat_body(model=MODEL_NAMES[1])
    assert (await client.post("/v1/chat/completions", json=body, headers=headers)).is_success


async def test_requests_per_minute(
    client: httpx.AsyncClient, store: KeyStore, clock: FakeClock
) -> None:
    headers = bearer(store.create(limits=Limits(requests=2)).secret)
    for remaining, reset in (("1", "30s"), ("0", "1m0s")):
        response = await client.get("/v1/models", headers=headers)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "2"
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
        assert response.headers["x-ratelimit-reset-requests"] == reset
        assert "x-ratelimit-limit-tokens" not in response.headers
    refused = await client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert refused.status_code == 429
    validate(refused.json(), "ErrorResponse")
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"],
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert refused.headers["retry-after"] == "30" and refused.headers["retry-after-ms"] == "30000"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(30)
    assert (await client.get("/v1/models", headers=headers)).status_code == 200


async def test_tokens_per_minute_count_the_prompt_and_max_tokens(
    client: httpx.AsyncClient, store: KeyStore
) -> None:
    headers = bearer(store.create(limits=Limits(tokens=50)).secret)
    body = chat_body(max_tokens=10, stream=True)  # prompt "<user>Hi\n<assistant>": 20 tokens
    streamed = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-ratelimit-limit-tokens"] == "50"
    assert streamed.headers["x-ratelimit-remaining-tokens"] == "20"
    assert streamed.headers["x-ratelimit-reset-tokens"] == "36s"
    refused = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert refused.headers["retry-after"] == "12"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "20"


async def test_a_request_larger_than_the_limit_is_not_retried(
    client: httpx.AsyncClient, store: KeyStore
) -> None:
    headers = bearer(store.create(limits=Limits(tokens=50)).secret)
    body = chat_body(max_tokens=100)
    refused = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-should-retry"] == "false" and "retry-after" not in refused.headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.12, "120ms"), (1, "1s"), (8.64, "8.64s"), (60, "1m0s")],
)
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert duration(seconds) == text
