"""The HTTP routes: chat completions, models, health."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from headrace.api.auth import grant_of
from headrace.api.disconnect import unless_disconnected
from headrace.api.sse import EventStreamResponse
from headrace.auth import Access
from headrace.engine.client import EngineClient
from headrace.serving import ChatService, ModelCatalog, dump, parse_chat_request

__all__ = ["health_router", "v1_router"]

# nginx's "client closed request": what a whole response gets once its client has gone.
_CLIENT_CLOSED = 499


def v1_router(chat: ChatService, models: ModelCatalog, access: Access) -> APIRouter:
    """The OpenAI routes, under /v1; `access` counts the tokens each key asks for."""
    router = APIRouter(prefix="/v1")

    @router.post("/chat/completions")
    async def create_chat_completion(request: Request) -> Response:
        body = parse_chat_request(await request.body())
        grant = grant_of(request)
        grant.require_model(body.model)
        prepared = chat.prepare(body)  # every check, before any response begins
        access.take_tokens(grant, prepared.most_tokens)
        if body.stream:
            return EventStreamResponse(chat.stream(prepared))
        completion = await unless_disconnected(request.receive, chat.complete(prepared))
        if completion is None:
            return Response(status_code=_CLIENT_CLOSED)
        return _json(completion)

    @router.get("/models")
    async def list_models(request: Request) -> Response:
        return _json(models.list(only=grant_of(request).models))

    @router.get("/models/{model_id:path}")
    async def retrieve_model(request: Request, model_id: str) -> Response:
        grant_of(request).require_model(model_id)
        return _json(models.card(model_id))

    return router


def health_router(engine: EngineClient) -> APIRouter:
    """GET /health, open to all: liveness and the engine's load."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, object]:
        stats = engine.stats()
        return {
            "status": "ok",
            "running": stats.running,
            "waiting": stats.waiting,
            "kv_cache_usage": round(stats.kv_cache_usage, 4),
            "preemptions": stats.num_preemptions,
        }

    return router


def _json(model: BaseModel) -> Response:
    return Response(dump(model), media_type="application/json")
