"""The HTTP routes: chat completions, models, health."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from headrace.api.disconnect import unless_disconnected
from headrace.api.drain import Drain
from headrace.api.sse import EventStreamResponse
from headrace.engine.client import EngineClient
from headrace.serving import ChatService, ModelCatalog, dump, parse_chat_request

__all__ = ["health_router", "v1_router"]

# nginx's "client closed request": what a whole response gets once its client has gone.
_CLIENT_CLOSED = 499


def v1_router(chat: ChatService, models: ModelCatalog) -> APIRouter:
    """The OpenAI routes, under /v1."""
    router = APIRouter(prefix="/v1")

    @router.post("/chat/completions")
    async def create_chat_completion(request: Request) -> Response:
        body = parse_chat_request(await request.body())
        prepared = chat.prepare(body)  # every check, before any response begins
        if body.stream:
            return EventStreamResponse(chat.stream(prepared))
        completion = await unless_disconnected(request.receive, chat.complete(prepared))
        if completion is None:
            return Response(status_code=_CLIENT_CLOSED)
        return _json(completion)

    @router.get("/models")
    async def list_models() -> Response:
        return _json(models.list())

    @router.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> Response:
        return _json(models.card(model_id))

    return router


def health_router(engine: EngineClient, drain: Drain) -> APIRouter:
    """GET /health, open to all: liveness and the engine's load; a 503 once draining."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> Response:
        stats = engine.stats()
        body = {
            "status": "draining" if drain.draining else "ok",
            "running": stats.running,
            "waiting": stats.waiting,
            "kv_cache_usage": round(stats.kv_cache_usage, 4),
            "preemptions": stats.num_preemptions,
        }
        status = 503 if drain.draining else 200
        return Response(orjson.dumps(body), status, media_type="application/json")

    return router


def _json(model: BaseModel) -> Response:
    return Response(dump(model), media_type="application/json")
