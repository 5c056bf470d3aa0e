"""A batch request's body answered as its endpoint answers it online, at batch priority."""

from __future__ import annotations

import asyncio

from headrace.batch.objects import BatchEndpoint
from headrace.engine.outputs import Priority
from headrace.errors import InvalidRequestError, ModelNotFoundError
from headrace.serving import (
    ChatService,
    CompletionService,
    dump,
    parse_chat_request,
    parse_completion_request,
)

__all__ = ["Endpoints"]


class Endpoints:
    """The chat and text completion services, for batch requests."""

    def __init__(self, chat: ChatService, completions: CompletionService) -> None:
        self._chat = chat
        self._completions = completions

    async def answer(
        self, endpoint: BatchEndpoint, body: bytes, models: frozenset[str] | None = None
    ) -> bytes:
        """The JSON bytes the same request gets online; raises the HeadraceError it would get
        (a model outside `models`, when given: ModelNotFoundError, as for its owner's key
        online; a streaming request: InvalidRequestError, as a batch has no stream)."""
        if endpoint == "/v1/chat/completions":
            chat = parse_chat_request(body)
            _check(chat.model, chat.stream, models)
            prepared = await asyncio.to_thread(self._chat.prepare, chat, Priority.BATCH)
            return dump(await self._chat.complete(prepared))
        completion = parse_completion_request(body)
        _check(completion.model, completion.stream, models)
        ready = await asyncio.to_thread(self._completions.prepare, completion, Priority.BATCH)
        return dump(await self._completions.complete(ready))


def _check(model: str, stream: bool | None, models: frozenset[str] | None) -> None:
    if models is not None and model not in models:
        raise ModelNotFoundError(model)
    if stream:
        raise InvalidRequestError(
            "Streaming is not supported for requests in a batch; leave 'stream' unset or false.",
            param="stream",
        )
