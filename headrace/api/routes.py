"""The HTTP routes: chat and text completions, models, health, metrics."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from headrace.api.auth import grant_of
from headrace.api.disconnect import unless_disconnected
from headrace.api.drain import Drain
from headrace.api.openapi import request_body, responses
from headrace.api.sse import EventStreamResponse
from headrace.auth import Access, Grant
from headrace.batch import BatchStore
from headrace.engine.client import EngineClient
from headrace.errors import UnsupportedMediaTypeError
from headrace.metrics import CONTENT_TYPE, Metrics
from headrace.serving import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatService,
    Completion,
    CompletionRequest,
    CompletionService,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelCatalog,
    ModelList,
    PreparedChat,
    PreparedCompletion,
    TokenizeRequest,
    TokenizeResponse,
    TokenizeService,
    dump,
    parse_chat_request,
    parse_completion_request,
    parse_detokenize_request,
    parse_tokenize_request,
)

__all__ = ["health_router", "metrics_router", "tokenizer_router", "v1_router"]

# nginx's "client closed request": what a whole response gets once its client has gone.
_CLIENT_CLOSED = 499


class Health(BaseModel):
    # "ok" while serving; "draining" once SIGTERM came, with HTTP status 503.
    status: Literal["ok", "draining"]
    # Requests in the engine's running batch.
    running: int
    # Requests waiting for a place in it.
    waiting: int
    # Fraction of the KV cache's blocks in use, 0 to 1.
    kv_cache_usage: float
    # Requests preempted since the start.
    preemptions: int
    # Of `running`, those at batch priority (the Batch API's).
    batch_running: int
    # Of `waiting`, those at batch priority.
    batch_waiting: int
    # Whether the decode step is still being compiled; meanwhile the engine decodes eagerly.
    compiling: bool
    # Batches (the Batch API's) by status, those with any; absent without a data directory.
    batches: dict[str, int] | None = None


def v1_router(
    chat: ChatService, completions: CompletionService, models: ModelCatalog, access: Access
) -> APIRouter:
    """The OpenAI routes, under /v1; `access` counts the tokens each key asks for."""
    router = APIRouter(prefix="/v1")

    @router.post(
        "/chat/completions",
        openapi_extra=request_body(ChatCompletionRequest, _chat_examples(models.names[0])),
        responses=responses(
            ChatCompletion, stream=ChatCompletionChunk, errors=(400, 401, 404, 413, 415, 503)
        ),
    )
    async def create_chat_completion(request: Request) -> Response:
        def prepare(body: bytes, grant: Grant) -> tuple[bool, PreparedChat]:
            parsed = parse_chat_request(body)
            grant.require_model(parsed.model)
            return bool(parsed.stream), chat.prepare(parsed)

        return await _answer(request, access, prepare, chat.stream, chat.complete)

    @router.post(
        "/completions",
        openapi_extra=request_body(CompletionRequest, _completion_examples(models.names[0])),
        responses=responses(Completion, stream=Completion, errors=(400, 401, 404, 413, 415, 503)),
    )
    async def create_completion(request: Request) -> Response:
        def prepare(body: bytes, grant: Grant) -> tuple[bool, PreparedCompletion]:
            parsed = parse_completion_request(body)
            grant.require_model(parsed.model)
            return bool(parsed.stream), completions.prepare(parsed)

        return await _answer(request, access, prepare, completions.stream, completions.complete)

    @router.get("/models", responses=responses(ModelList, errors=(401,)))
    async def list_models(request: Request) -> Response:
        return _json(models.list(only=grant_of(request).models))

    @router.get("/models/{model_id:path}", responses=responses(ModelCard, errors=(401, 404)))
    async def retrieve_model(request: Request, model_id: str) -> Response:
        grant_of(request).require_model(model_id)
        return _json(models.card(model_id))

    return router


def tokenizer_router(tokens: TokenizeService, model: str) -> APIRouter:
    """vLLM's POST /tokenize and /detokenize, at the root as vLLM serves them; `model`: a
    served name, for the examples."""
    router = APIRouter()
    examples = {
        "prompt": {"model": model, "prompt": "Hello!"},
        "messages": {"model": model, "messages": [{"role": "user", "content": "Hello!"}]},
    }

    @router.post(
        "/tokenize",
        openapi_extra=request_body(TokenizeRequest, examples),
        responses=responses(TokenizeResponse, errors=(400, 401, 404, 413, 415)),
    )
    async def tokenize(request: Request) -> Response:
        def answer(body: bytes, grant: Grant) -> TokenizeResponse:
            parsed = parse_tokenize_request(body)
            _require_model(grant, parsed.model)
            return tokens.tokenize(parsed)

        return await _answered(request, answer)

    @router.post(
        "/detokenize",
        openapi_extra=request_body(DetokenizeRequest, {"tokens": {"model": model, "tokens": [1]}}),
        responses=responses(DetokenizeResponse, errors=(400, 401, 404, 413, 415)),
    )
    async def detokenize(request: Request) -> Response:
        def answer(body: bytes, grant: Grant) -> DetokenizeResponse:
            parsed = parse_detokenize_request(body)
            _require_model(grant, parsed.model)
            return tokens.detokenize(parsed)

        return await _answered(request, answer)

    return router


def health_router(
    engine: EngineClient, drain: Drain, batches: BatchStore | None = None
) -> APIRouter:
    """GET /health, open to all: liveness, the engine's load and the batches' progress; a 503
    once draining."""
    router = APIRouter()

    @router.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "Draining: shutting down."}},
    )
    async def health() -> Response:
        stats = engine.stats()
        health = Health(
            status="draining" if drain.draining else "ok",
            running=stats.running,
            waiting=stats.waiting,
            kv_cache_usage=round(stats.kv_cache_usage, 4),
            preemptions=stats.num_preemptions,
            batch_running=stats.batch_running,
            batch_waiting=stats.batch_waiting,
            compiling=stats.compiling,
        )
        if batches is not None:
            health.batches = await run_in_threadpool(batches.count_by_status)
        return _json(health, status_code=503 if drain.draining else 200)

    return router


def metrics_router(metrics: Metrics) -> APIRouter:
    """GET /metrics, open to all, as vLLM's: every family in Prometheus's text format, made on a
    worker thread (it reads the engine and the batch store)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def exposition() -> Response:
        return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE)

    return router


def _chat_examples(model: str) -> dict[str, object]:
    """Requests that succeed, by name, for the OpenAPI document."""
    messages = [{"role": "user", "content": "Explain quantum computing"}]
    return {
        "whole": {"model": model, "messages": messages, "max_tokens": 16},
        "stream": {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    }


def _completion_examples(model: str) -> dict[str, object]:
    """Requests that succeed, by name, for the OpenAPI document."""
    return {
        "whole": {"model": model, "prompt": "Once upon a time", "max_tokens": 16},
        "score": {
            "model": model,
            "prompt": "The sky is blue",
            "echo": True,
            "logprobs": 1,
            "max_tokens": 0,
        },
    }


class _Costed(Protocol):
    @property
    def most_tokens(self) -> int:
        """The most tokens the request can cost."""
        ...


_P = TypeVar("_P", bound=_Costed)


async def _answer(
    request: Request,
    access: Access,
    prepare: Callable[[bytes, Grant], tuple[bool, _P]],
    stream: Callable[[_P], AsyncGenerator[BaseModel, None]],
    complete: Callable[[_P], Coroutine[Any, Any, BaseModel]],
) -> Response:
    """A completion route: the body prepared (parsed, checked, its prompt rendered: whether to
    stream, and the prepared request), its tokens counted against the key, then the stream or
    the whole response.

    Every check happens before any response begins, parsing included. It runs on a worker
    thread, as rendering and tokenizing a long prompt can take seconds (8 MiB: 6 s), while the
    loop serves others. A whole response whose client went away gets 499 (the work is aborted).
    """
    _require_json(request)
    body, grant = await request.body(), grant_of(request)
    streamed, prepared = await run_in_threadpool(prepare, body, grant)
    access.take_tokens(grant, prepared.most_tokens)
    if streamed:
        return EventStreamResponse(stream(prepared))
    response = await unless_disconnected(request.receive, complete(prepared))
    if response is None:
        return Response(status_code=_CLIENT_CLOSED)
    return _json(response)


async def _answered(request: Request, answer: Callable[[bytes, Grant], BaseModel]) -> Response:
    """A JSON route's answer to its body and the key's grant, made on a worker thread (a long
    prompt takes a while to tokenize)."""
    _require_json(request)
    body, grant = await request.body(), grant_of(request)
    return _json(await run_in_threadpool(answer, body, grant))


def _require_model(grant: Grant, model: str | None) -> None:
    """The key's check of the model a request names, if it names one."""
    if model is not None:
        grant.require_model(model)


def _require_json(request: Request) -> None:
    """Raises UnsupportedMediaTypeError for a body declared as anything but JSON.

    A body declared as nothing is read as JSON.
    """
    declared = request.headers.get("content-type", "")
    media_type = declared.partition(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(media_type)


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(dump(model), status_code, media_type="application/json")
