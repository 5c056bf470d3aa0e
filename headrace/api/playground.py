"""GET /: the playground, a chat page in one static file that talks to the /v1 routes."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["playground_router"]


def playground_router() -> APIRouter:
    """GET and HEAD / answer playground.html, read once here; it is not part of the API, so the
    OpenAPI document leaves it out."""
    page = files("headrace.api").joinpath("playground.html").read_bytes()
    router = APIRouter()

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    return router
