"""The ASGI app: routes, authentication, error envelopes, and the engine's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from fastapi import Depends, FastAPI

from headrace.api.auth import api_key_check
from headrace.api.drain import Drain
from headrace.api.errors import install_error_handlers
from headrace.api.routes import health_router, v1_router
from headrace.engine.client import EngineClient
from headrace.serving import ChatService, ModelCatalog, TokenizerLike
from headrace.text.grammar import GrammarCompiler

__all__ = ["Served", "create_app"]


class Served(Protocol):
    """What the app serves; `headrace.serving.runtime.Runtime` is one."""

    @property
    def engine(self) -> EngineClient: ...

    @property
    def tokenizer(self) -> TokenizerLike: ...

    @property
    def model_names(self) -> Sequence[str]:
        """Names clients may use for the model, in listing order."""
        ...

    @property
    def grammars(self) -> GrammarCompiler | None:
        """Compiles grammars for constrained decoding; None turns it off."""
        ...


def create_app(
    served: Served,
    *,
    api_keys: Sequence[str] = (),
    tool_call_format: str | None = None,
    drain: Drain | None = None,
) -> FastAPI:
    """The app; with `api_keys`, every /v1 route wants `Authorization: Bearer <key>`.

    tool_call_format: how replies are read for tool calls; None lets the chat template tell.
    drain: what shuts the app down gracefully (the server's SIGTERM runs it); None makes one.
    """
    drain = drain or Drain(served.engine)
    models = ModelCatalog(served.model_names)
    chat = ChatService(
        served.engine,
        served.tokenizer,
        models,
        grammars=served.grammars,
        tool_call_format=tool_call_format,
    )
    app = FastAPI(title="headrace", lifespan=_lifespan(served.engine))
    install_error_handlers(app)
    app.add_middleware(drain.guard)
    app.include_router(health_router(served.engine, drain))
    app.include_router(
        v1_router(chat, models), dependencies=[Depends(api_key_check(api_keys))] if api_keys else []
    )
    return app


def _lifespan(engine: EngineClient) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.shutdown()

    return lifespan
