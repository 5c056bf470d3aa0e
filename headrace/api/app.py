"""The ASGI app: routes, authentication, error envelopes, and the engine's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from headrace.api.auth import RATE_LIMIT_HEADERS, KeyCheck
from headrace.api.batches import batches_router
from headrace.api.body_limit import BodyLimit
from headrace.api.drain import Drain
from headrace.api.errors import install_error_handlers, status_of
from headrace.api.files import FILES_PATH, files_router
from headrace.api.openapi import install_openapi
from headrace.api.playground import playground_router
from headrace.api.request_context import REQUEST_ID_HEADER
from headrace.api.request_log import RequestLog, observer
from headrace.api.routes import health_router, metrics_router, tokenizer_router, v1_router
from headrace.auth import Access
from headrace.batch import BatchStore, FileStore
from headrace.batch.endpoints import Endpoints
from headrace.batch.runner import BatchRunner
from headrace.config import ServerConfig
from headrace.engine.client import EngineClient
from headrace.metrics import Metrics
from headrace.serving import Served, Services
from headrace.text import ToolCallFormat

__all__ = ["Served", "create_app"]

# Seconds between two sweeps of expired files.
_EXPIRY_SWEEP_S = 60.0


def create_app(
    served: Served,
    *,
    access: Access | None = None,
    tool_call_format: ToolCallFormat | None = None,
    max_waiting: int = ServerConfig.max_waiting,
    max_body_bytes: int = ServerConfig.max_body_bytes,
    drain: Drain | None = None,
    files: FileStore | None = None,
    max_file_bytes: int = ServerConfig.max_file_bytes,
    batch_concurrency: int = 16,
    log_requests: bool = False,
    allowed_origins: Sequence[str] = ServerConfig.allowed_origins,
) -> FastAPI:
    """The app.

    access: who may use it; when it wants keys, every route but /health and /metrics needs
        `Authorization: Bearer <key>`. None: anyone may, without limits.
    tool_call_format: how replies are read for tool calls; None lets the chat template tell.
    max_waiting: requests that may wait for the engine before completions get 503.
    max_body_bytes: largest request body; a larger one gets 413.
    drain: what shuts the app down gracefully (the server's SIGTERM runs it); None makes one.
    files: the data directory's files, served at /v1/files; None: no Files API.
    max_file_bytes: largest file uploaded to /v1/files (its body is exempt from max_body_bytes).
    batch_concurrency: batch requests on the engine at once, of every batch together (the
        engine's max_num_seqs keeps it full); batches run, with files, on a runner the app's
        lifespan starts and stops; a key's batch requests spend its tokens per minute in a
        bucket apart from its interactive requests', waiting for them rather than failing.
    log_requests: each request's log line carries its prompts' and its output's text.
    allowed_origins: origins whose pages may call it from a browser ("*": any): CORS headers
        on every response to them, preflights answered before any key is asked for.

    Every response carries `x-request-id`; GET /metrics exposes the Prometheus families.
    """
    access = access or Access()
    drain = drain or Drain(served.engine)
    batches = BatchStore(files.store, files, clock=files.clock) if files is not None else None
    metrics = Metrics(
        served.model_names[0], served.engine, batches.queued_requests if batches else None
    )
    services = Services.of(
        served,
        tool_call_format=tool_call_format,
        max_waiting=max_waiting,
        observe=observer(metrics),
        keep_text=log_requests,
    )
    chat, completions, models = services.chat, services.completions, services.models
    runner: BatchRunner | None = None
    if batches is not None:
        runner = BatchRunner(
            batches,
            Endpoints(
                chat,
                completions,
                status_of,
                concurrency=batch_concurrency,
                meter=access.spend_batch_tokens,
            ),
            concurrency=batch_concurrency,
        )
    # Run while the app does: the batches, and the sweep of expired files.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if runner is not None:
        background.append(runner.run)
    if files is not None:
        background.append(partial(_remove_expired_files, files))
    app = FastAPI(title="headrace", lifespan=_lifespan(served.engine, background))
    exempt = (FILES_PATH,) if files is not None else ()
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, exempt=exempt)
    install_error_handlers(app)
    app.add_middleware(drain.guard)
    app.add_middleware(KeyCheck, access=access)
    if allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(allowed_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            # What the SDKs read from a response, for a page's script to read too.
            expose_headers=[REQUEST_ID_HEADER, "retry-after", *RATE_LIMIT_HEADERS],
        )
    app.add_middleware(RequestLog, metrics=metrics, log_text=log_requests)
    install_openapi(app)
    app.include_router(health_router(served.engine, drain, batches))
    app.include_router(metrics_router(metrics))
    app.include_router(playground_router())
    app.include_router(v1_router(chat, completions, models, access))
    app.include_router(tokenizer_router(services.tokens, models.names[0]))
    if files is not None:
        app.include_router(files_router(files, max_file_bytes))
    if batches is not None and runner is not None:
        app.include_router(batches_router(batches, runner))
    return app


def _lifespan(
    engine: EngineClient, background: Sequence[Callable[[], Coroutine[Any, Any, None]]]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        tasks = [asyncio.create_task(run()) for run in background]
        try:
            yield
        finally:
            for task in tasks:  # before the engine: batch requests stop, unrecorded, to resume
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine.shutdown()

    return lifespan


async def _remove_expired_files(files: FileStore) -> None:
    """Frees the bytes of expired files every minute; to clients they are gone as they expire."""
    while True:
        await asyncio.sleep(_EXPIRY_SWEEP_S)
        await asyncio.to_thread(files.remove_expired)
