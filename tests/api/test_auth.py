"""With API keys configured, /v1 wants a right bearer key; /health stays open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes import chat_body, make_app, make_client
from tests.schema import validate

KEYS = ("sk-one", "sk-two")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(make_app(api_keys=KEYS)) as client:
        yield client


def unauthorized(response: httpx.Response) -> str:
    assert response.status_code == 401
    validate(response.json(), "ErrorResponse")
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["param"] is None
    return str(error["message"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("GET", "/v1/models/test-model"), ("POST", "/v1/chat/completions")],
)
async def test_no_key(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json=chat_body())
    assert unauthorized(response).startswith("You didn't provide an API key.")


@pytest.mark.parametrize("header", ["Bearer sk-three", "Bearer sk-on", "Basic sk-one", "sk-one"])
async def test_wrong_key(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/v1/models", headers={"Authorization": header})
    assert unauthorized(response) == "Incorrect API key provided."
    assert "sk-" not in response.text


@pytest.mark.parametrize("header", ["Bearer sk-one", "Bearer sk-two", "bearer sk-one"])
async def test_right_key(client: httpx.AsyncClient, header: str) -> None:
    headers = {"Authorization": header}
    assert (await client.get("/v1/models", headers=headers)).status_code == 200
    response = await client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert response.status_code == 200


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200


async def test_no_keys_configured_means_open() -> None:
    async with make_client(make_app()) as client:
        assert (await client.get("/v1/models")).status_code == 200
