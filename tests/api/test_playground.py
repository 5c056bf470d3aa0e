"""GET /: the playground page, one self-contained file behind the key like every route."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.fakes import make_app, make_client


async def test_the_page_is_served_as_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>headrace playground</title>" in response.text
    assert "/v1/chat/completions" in response.text


async def test_head_answers_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == b""


@pytest.mark.parametrize(
    "reference",
    [
        r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""",  # a resource elsewhere
        r"""\b(?:fetch|import)\s*\(\s*["'`](?:[a-z]+:)?//""",  # a script's request elsewhere
        r"""@import|url\(""",  # a stylesheet's
        r"//cdn|googleapis|unpkg|jsdelivr",
    ],
)
async def test_the_page_loads_nothing_from_elsewhere(
    client: httpx.AsyncClient, reference: str
) -> None:
    page = (await client.get("/")).text
    assert not re.search(reference, page, re.IGNORECASE)


async def test_the_page_calls_only_the_server_it_came_from(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    assert set(re.findall(r"""fetch\(\s*["'`]([^"'`]*)""", page)) == {
        "/v1/models",
        "/v1/chat/completions",
    }


async def test_the_page_writes_no_markup(client: httpx.AsyncClient) -> None:
    # What the model says goes into textContent, never innerHTML: it cannot inject markup.
    page = (await client.get("/")).text
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)


async def test_with_keys_the_page_needs_one() -> None:
    async with make_client(make_app(api_keys=["sk-test"])) as client:
        refused = await client.get("/")
        admitted = await client.get("/", headers={"Authorization": "Bearer sk-test"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert admitted.status_code == 200


async def test_the_openapi_document_leaves_the_page_out(client: httpx.AsyncClient) -> None:
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


async def test_it_is_only_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
