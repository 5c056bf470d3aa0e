"""Cross-origin calls from web pages (CORS): none unless origins are allowed; then answered
for those, preflights before any key is asked for, errors readable too."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from headrace.api.app import create_app
from headrace.auth import Access
from headrace.config import ServerConfig
from tests.fakes import FakeServed, chat_body, make_client, shared_files

KEY = "sk-cors"
PAGE = "https://app.example.com"
PREFLIGHT = {
    "origin": PAGE,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type, x-stainless-os",
}


def client(allowed_origins: Sequence[str]) -> httpx.AsyncClient:
    app = create_app(
        FakeServed(), access=Access((KEY,)), files=shared_files(), allowed_origins=allowed_origins
    )
    return make_client(app)


def authorized(origin: str = PAGE) -> dict[str, str]:
    return {"origin": origin, "authorization": f"Bearer {KEY}"}


async def test_by_default_no_page_elsewhere_may_read_a_response() -> None:
    async with client(ServerConfig.allowed_origins) as http:
        response = await http.post("/v1/chat/completions", json=chat_body(), headers=authorized())
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        preflight = await http.options("/v1/chat/completions", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers


async def test_any_origin_when_allowed() -> None:
    async with client(["*"]) as http:
        preflight = await http.options("/v1/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 200  # no key asked of a preflight
        assert preflight.headers["access-control-allow-origin"] == "*"
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-stainless-os"} <= set(allowed.split(", "))
        response = await http.post("/v1/chat/completions", json=chat_body(), headers=authorized())
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        exposed = response.headers["access-control-expose-headers"].split(", ")
        assert "x-request-id" in exposed and "x-ratelimit-remaining-tokens" in exposed
        # An error is readable by the page too: the SDK shows its message.
        refused = await http.get("/v1/models", headers={"origin": PAGE})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "*"


async def test_only_the_origins_allowed() -> None:
    async with client([PAGE, "http://localhost:3000"]) as http:
        for origin in (PAGE, "http://localhost:3000"):
            response = await http.get("/v1/models", headers=authorized(origin))
            assert response.headers["access-control-allow-origin"] == origin
        other = await http.get("/v1/models", headers=authorized("https://evil.example"))
        assert other.status_code == 200  # served: the browser keeps it from the page
        assert "access-control-allow-origin" not in other.headers
        preflight = await http.options(
            "/v1/chat/completions", headers={**PREFLIGHT, "origin": "https://evil.example"}
        )
        assert preflight.status_code == 400
