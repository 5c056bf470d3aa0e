"""Chat completions: a request becomes engine work; engine tokens become OpenAI objects.

`prepare` does every check and renders the prompt, so a bad request fails before a response
(or a stream) begins. `complete` then returns the whole answer; `stream` yields its chunks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from headrace.engine.client import EngineClient
from headrace.engine.outputs import SamplingParams, TokenOutput
from headrace.serving.conversation import template_messages
from headrace.serving.errors import (
    ContextLengthExceededError,
    InternalError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    Usage,
)
from headrace.serving.tokenizer import TokenizerLike

__all__ = ["ChatService", "PreparedChat"]

logger = logging.getLogger("headrace.serving")


@dataclass(frozen=True)
class PreparedChat:
    # "chatcmpl-<hex>": the completion's id and the engine's request id.
    request_id: str
    # The model name the client asked for, echoed in every response object.
    model: str
    # Unix seconds when the request was accepted: the `created` of every chunk.
    created: int
    # The rendered prompt.
    prompt_token_ids: list[int]
    # How the engine samples the completion.
    params: SamplingParams
    # Strings that end the completion, never part of its text.
    stop: tuple[str, ...]
    # Stream chunks carry `usage`: null, then the counts in a last chunk without choices.
    include_usage: bool


@dataclass(frozen=True)
class _Step:
    # Text made final since the previous step; may be empty.
    text: str
    # Set on the last step only.
    finish_reason: FinishReason | None
    # Token counts so far.
    usage: Usage


class ChatService:
    """Runs chat completions on an engine."""

    def __init__(
        self, engine: EngineClient, tokenizer: TokenizerLike, models: ModelCatalog
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._models = models

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        """Checks the request and renders its prompt; raises HeadraceError, starts nothing."""
        self._models.require(request.model)
        _check_supported(request)
        if request.model_extra:
            logger.warning("ignoring unknown request fields: %s", ", ".join(request.model_extra))
        messages = template_messages(request.messages)
        try:
            prompt = self._tokenizer.apply_chat_template(messages)
        except ValueError as error:  # ChatTemplateError: the template refused the conversation
            raise InvalidRequestError(str(error), param="messages") from error
        params = SamplingParams(
            max_tokens=self._max_tokens(request, len(prompt)),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=request.seed,
            stop_token_ids=self._tokenizer.eos_token_ids,
        )
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        options = request.stream_options
        return PreparedChat(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            model=request.model,
            created=int(time.time()),
            prompt_token_ids=prompt,
            params=params,
            stop=tuple(string for string in stop if string),
            include_usage=bool(options and options.include_usage),
        )

    async def complete(self, chat: PreparedChat) -> ChatCompletion:
        """The whole completion."""
        texts: list[str] = []
        last: _Step | None = None
        async with aclosing(self._steps(chat)) as steps:
            async for last in steps:
                texts.append(last.text)
        assert last is not None and last.finish_reason is not None  # _steps ends on a finish
        message = AssistantMessage(role="assistant", content="".join(texts), refusal=None)
        choice = Choice(index=0, message=message, finish_reason=last.finish_reason, logprobs=None)
        return ChatCompletion(
            id=chat.request_id,
            object="chat.completion",
            created=chat.created,
            model=chat.model,
            choices=[choice],
            usage=last.usage,
        )

    async def stream(self, chat: PreparedChat) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The completion as chunks: the role, the text as it comes, the finish, the usage."""
        yield _chunk(chat, Delta(role="assistant", content=""))
        async with aclosing(self._steps(chat)) as steps:
            async for step in steps:
                if step.text:
                    yield _chunk(chat, Delta(content=step.text))
                if step.finish_reason is not None:
                    yield _chunk(chat, Delta(), step.finish_reason)
                    if chat.include_usage:
                        yield _usage_chunk(chat, step.usage)

    def _max_tokens(self, request: ChatCompletionRequest, prompt_tokens: int) -> int:
        limit = self._engine.max_model_len
        wanted = request.max_completion_tokens or request.max_tokens
        if wanted is None:
            if prompt_tokens >= limit:
                raise ContextLengthExceededError(
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                    "the messages."
                )
            return limit - prompt_tokens
        if prompt_tokens + wanted > limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, {wanted} in "
                "the completion). Please reduce the length of the messages or completion."
            )
        return wanted

    async def _steps(self, chat: PreparedChat) -> AsyncGenerator[_Step, None]:
        """Engine outputs as final text; the last step carries the finish reason.

        However this ends before the engine finished (a stop string, an error, the consumer
        closing it or being cancelled), the engine request is aborted at once.
        """
        detokenizer = self._tokenizer.detokenizer(chat.stop)
        outputs = self._engine.generate(chat.request_id, chat.prompt_token_ids, chat.params)
        engine_done = False
        try:
            async for output in outputs:
                engine_done = output.finish_reason is not None
                if output.finish_reason == "abort":
                    raise ServiceUnavailableError("The engine dropped the request; please retry.")
                text = detokenizer.push(output.token_ids)
                if detokenizer.stopped:
                    if not engine_done:
                        self._engine.abort(chat.request_id)
                        engine_done = True
                    yield _Step(text, "stop", _usage(output))
                    return
                if output.finish_reason is not None:
                    yield _Step(text + detokenizer.flush(), output.finish_reason, _usage(output))
                    return
                yield _Step(text, None, _usage(output))
            raise InternalError("The engine ended the request without a finish reason.")
        finally:
            if not engine_done:
                self._engine.abort(chat.request_id)
            await outputs.aclose()


def _check_supported(request: ChatCompletionRequest) -> None:
    if request.n not in (None, 1):
        raise InvalidRequestError("Only n=1 is supported.", param="n")
    if request.logprobs:
        raise InvalidRequestError("logprobs are not supported.", param="logprobs")
    if request.stream_options is not None and not request.stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )


def _usage(output: TokenOutput) -> Usage:
    return Usage(
        prompt_tokens=output.num_prompt_tokens,
        completion_tokens=output.num_generated_tokens,
        total_tokens=output.num_prompt_tokens + output.num_generated_tokens,
    )


def _chunk(
    chat: PreparedChat, delta: Delta, finish_reason: FinishReason | None = None
) -> ChatCompletionChunk:
    choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason, logprobs=None)
    chunk = ChatCompletionChunk(
        id=chat.request_id,
        object="chat.completion.chunk",
        created=chat.created,
        model=chat.model,
        choices=[choice],
    )
    if chat.include_usage:
        chunk.usage = None  # assigned, hence on the wire as null
    return chunk


def _usage_chunk(chat: PreparedChat, usage: Usage) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=chat.request_id,
        object="chat.completion.chunk",
        created=chat.created,
        model=chat.model,
        choices=[],
        usage=usage,
    )
