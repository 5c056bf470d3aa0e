"""A batch request's body answered as its endpoint answers it online, at batch priority, and
the output line of its result.

A request is prepared (parsed, checked, its prompt rendered), then waits for its owner's batch
tokens and for one of the engine slots shared by every batch, then runs: a batch its owner's
limits hold back waits without taking a slot from the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson

from headrace.batch.lines import BatchLine, LineResult, LineUsage, ResultKind
from headrace.batch.objects import BatchEndpoint
from headrace.engine.outputs import Priority
from headrace.errors import HeadraceError, InternalError, InvalidRequestError, ModelNotFoundError
from headrace.serving import (
    ChatCompletion,
    ChatService,
    Completion,
    CompletionService,
    PreparedChat,
    PreparedCompletion,
    dump,
    parse_chat_request,
    parse_completion_request,
)

__all__ = ["Endpoints", "StatusOf", "TokenMeter"]

logger = logging.getLogger("headrace.batch")

# The HTTP status a request failing with the error gets online (api's mapping, injected).
StatusOf = Callable[[HeadraceError], int]
# Waits until an owner (an API key's id; None: the shared owner) may spend the tokens on a batch
# request, and counts them; raises the HeadraceError the request fails with if it never may.
TokenMeter = Callable[[str | None, int], Awaitable[None]]


class Endpoints:
    """The chat and text completion services, for batch requests."""

    def __init__(
        self,
        chat: ChatService,
        completions: CompletionService,
        status_of: StatusOf,
        *,
        concurrency: int,
        meter: TokenMeter | None = None,
    ) -> None:
        """concurrency: batch requests on the engine at once, of every batch together;
        meter: what counts an owner's batch tokens (None: nothing is counted)."""
        self._chat = chat
        self._completions = completions
        self._status_of = status_of
        self._meter = meter
        self._slots = asyncio.Semaphore(concurrency)

    async def run(
        self,
        endpoint: BatchEndpoint,
        line: BatchLine,
        *,
        owner: str | None = None,
        models: frozenset[str] | None = None,
    ) -> LineResult:
        """Runs one request of `owner`'s batch: its output line, with the response the same
        request gets online, an error response included (an unexpected error: a 500, logged)."""
        kind: ResultKind = "completed"
        usage: LineUsage | None = None
        try:
            response = await self.answer(endpoint, line, owner=owner, models=models)
            body, status = dump(response), 200
            usage = _usage(response)
        except HeadraceError as error:
            kind, body, status = "failed", orjson.dumps(error.to_dict()), self._status_of(error)
        except Exception:
            logger.exception("batch request %r failed", line.custom_id)
            internal = InternalError()
            kind, body = "failed", orjson.dumps(internal.to_dict())
            status = self._status_of(internal)
        output = (
            b'{"id":"batch_req_%s","custom_id":%s,"response":{"status_code":%d,'
            b'"request_id":"req_%s","body":%s},"error":null}'
            % (
                secrets.token_hex(16).encode(),
                orjson.dumps(line.custom_id),
                status,
                secrets.token_hex(16).encode(),
                body,
            )
        )
        return LineResult(kind, output.decode(), usage)

    async def answer(
        self,
        endpoint: BatchEndpoint,
        line: BatchLine,
        *,
        owner: str | None = None,
        models: frozenset[str] | None = None,
    ) -> ChatCompletion | Completion:
        """The response the same request gets online; raises the HeadraceError it would get
        (a model outside `models`, when given: ModelNotFoundError, as for its owner's key
        online; a streaming request: InvalidRequestError, as a batch has no stream; more
        tokens than its owner's whole limit: RateLimitError). Its body is read, parsed and
        prepared on a worker thread, as online."""
        if endpoint == "/v1/chat/completions":
            chat = await asyncio.to_thread(self._prepare_chat, line, models)
            async with self._admitted(owner, chat.most_tokens):
                return await self._chat.complete(chat)
        completion = await asyncio.to_thread(self._prepare_completion, line, models)
        async with self._admitted(owner, completion.most_tokens):
            return await self._completions.complete(completion)

    def _prepare_chat(self, line: BatchLine, models: frozenset[str] | None) -> PreparedChat:
        request = parse_chat_request(line.read_body())
        _check(request.model, request.stream, models)
        return self._chat.prepare(request, Priority.BATCH)

    def _prepare_completion(
        self, line: BatchLine, models: frozenset[str] | None
    ) -> PreparedCompletion:
        request = parse_completion_request(line.read_body())
        _check(request.model, request.stream, models)
        return self._completions.prepare(request, Priority.BATCH)

    @asynccontextmanager
    async def _admitted(self, owner: str | None, tokens: int) -> AsyncIterator[None]:
        """Holds an engine slot for a request of `owner`, once its tokens are counted."""
        if self._meter is not None:
            await self._meter(owner, tokens)
        async with self._slots:
            yield


def _usage(response: ChatCompletion | Completion) -> LineUsage:
    usage = response.usage
    if usage is None:  # a whole response always has it
        raise ValueError(f"response {response.id} has no usage")
    return LineUsage(
        model=response.model,
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=usage.prompt_tokens_details.cached_tokens,
        completion_tokens=usage.completion_tokens,
    )


def _check(model: str, stream: bool | None, models: frozenset[str] | None) -> None:
    if models is not None and model not in models:
        raise ModelNotFoundError(model)
    if stream:
        raise InvalidRequestError(
            "Streaming is not supported for requests in a batch; leave 'stream' unset or false.",
            param="stream",
        )
