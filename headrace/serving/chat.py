"""Chat completions: a request becomes engine work; engine tokens become OpenAI objects.

`prepare` does every check and renders the prompt, so a bad request fails before a response
(or a stream) begins. `complete` then returns the whole answer; `stream` yields its chunks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from headrace.config import ServerConfig
from headrace.engine.client import EngineClient
from headrace.engine.outputs import SamplingParams, TokenOutput
from headrace.serving.conversation import template_messages
from headrace.serving.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    InternalError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import ChatCompletionRequest
from headrace.serving.reply import Reply
from headrace.serving.responses import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    PromptTokensDetails,
    Usage,
)
from headrace.serving.tokenizer import TokenizerLike
from headrace.serving.tools import (
    OutputConstraint,
    ToolRequest,
    prepare_response_format,
    prepare_tools,
    template_tools,
)
from headrace.text.grammar import (
    GRAMMAR_TOOL_CALL_FORMATS,
    CompiledGrammar,
    GrammarCompiler,
    GrammarError,
)

__all__ = ["ChatService", "PreparedChat"]

logger = logging.getLogger("headrace.serving")

# What an overloaded server asks its clients to wait before they retry (Retry-After).
_RETRY_AFTER_SECONDS = 1


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
    # How the reply is read for tool calls; None when the request allows none.
    tool_call_format: str | None

    @property
    def most_tokens(self) -> int:
        """The prompt and the longest completion allowed: the most the request can cost."""
        return len(self.prompt_token_ids) + self.params.max_tokens


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
        self,
        engine: EngineClient,
        tokenizer: TokenizerLike,
        models: ModelCatalog,
        *,
        grammars: GrammarCompiler | None = None,
        tool_call_format: str | None = None,
        max_waiting: int = ServerConfig.max_waiting,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._models = models
        # Compiles forced tool calls and response formats; None: constrained decoding is off.
        self._grammars = grammars
        # How replies are read for tool calls: the server's choice, else the template's.
        self._tool_call_format = tool_call_format or tokenizer.tool_call_format
        # Requests that may wait for the engine before new ones are refused.
        self._max_waiting = max_waiting

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        """Checks the request and renders its prompt; raises HeadraceError, starts nothing."""
        self._check_capacity()
        self._models.require(request.model)
        _check_supported(request)
        if request.model_extra:
            logger.warning("ignoring unknown request fields: %s", ", ".join(request.model_extra))
        tools = prepare_tools(request)
        constraint = prepare_response_format(request, tools)
        messages = template_messages(request.messages)
        try:
            prompt = self._tokenizer.apply_chat_template(
                messages, tools=template_tools(tools) if tools else None
            )
        except ValueError as error:  # ChatTemplateError: the template refused the conversation
            raise InvalidRequestError(str(error), param="messages") from error
        tool_call_format = self._tool_call_format if tools and tools.allowed else None
        grammar = None
        if tools and tools.forced:
            # The grammar writes calls in a syntax it knows; the reply is read in that syntax.
            tool_call_format = self._forced_call_format()
            grammar = self._tool_call_grammar(tools, tool_call_format)
        elif constraint is not None:
            grammar = self._output_grammar(constraint)
        params = SamplingParams(
            max_tokens=self._max_tokens(request, len(prompt)),
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=max(request.top_k or 0, 0),
            min_p=request.min_p or 0.0,
            seed=request.seed,
            stop_token_ids=self._stop_token_ids(request),
            grammar=grammar,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repetition_penalty=request.repetition_penalty or 1.0,
            logit_bias=self._logit_bias(request.logit_bias or {}),
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
            tool_call_format=tool_call_format,
        )

    async def complete(self, chat: PreparedChat) -> ChatCompletion:
        """The whole completion."""
        reply = Reply(chat.tool_call_format)
        last: _Step | None = None
        async with aclosing(self._steps(chat, reply.markers)) as steps:
            async for last in steps:
                reply.feed(last.text, last=last.finish_reason is not None)
        assert last is not None and last.finish_reason is not None  # _steps ends on a finish
        message = AssistantMessage(role="assistant", content=reply.content, refusal=None)
        if calls := reply.tool_calls:
            message.tool_calls = calls
        choice = Choice(
            index=0,
            message=message,
            finish_reason=reply.finish_reason(last.finish_reason),
            logprobs=None,
        )
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
        reply = Reply(chat.tool_call_format)
        async with aclosing(self._steps(chat, reply.markers)) as steps:
            async for step in steps:
                for delta in reply.feed(step.text, last=step.finish_reason is not None):
                    yield _chunk(chat, delta)
                if step.finish_reason is not None:
                    yield _chunk(chat, Delta(), reply.finish_reason(step.finish_reason))
                    if chat.include_usage:
                        yield _usage_chunk(chat, step.usage)

    def _check_capacity(self) -> None:
        """Refuse at once rather than queue behind more requests than the server allows."""
        if self._engine.stats().waiting >= self._max_waiting:
            raise EngineOverloadedError(_RETRY_AFTER_SECONDS)

    def _forced_call_format(self) -> str:
        """The format forced calls are written in: the model's, if a grammar can write it."""
        known = self._tool_call_format in GRAMMAR_TOOL_CALL_FORMATS
        return self._tool_call_format if known else "hermes"

    def _tool_call_grammar(self, tools: ToolRequest, call_format: str) -> CompiledGrammar:
        callable_tools = [
            {"name": t.name, "parameters": dict(t.arguments_schema)} for t in tools.callable_tools
        ]
        return self._compile(
            lambda grammars: grammars.tool_calls(
                callable_tools, most_calls=tools.most_forced_calls, format=call_format
            ),
            param="tools",
        )

    def _output_grammar(self, constraint: OutputConstraint) -> CompiledGrammar:
        if constraint.schema is None:
            return self._compile(lambda grammars: grammars.json_object(), "response_format")
        schema = dict(constraint.schema)
        return self._compile(
            lambda grammars: grammars.json_schema(schema, strict=constraint.strict),
            param="response_format",
        )

    def _compile(
        self, build: Callable[[GrammarCompiler], CompiledGrammar], param: str
    ) -> CompiledGrammar:
        if self._grammars is None:
            raise InvalidRequestError(
                "Constrained decoding is not available on this server.", param=param
            )
        try:
            return build(self._grammars)
        except GrammarError as error:
            raise InvalidRequestError(str(error), param=param) from error

    def _stop_token_ids(self, request: ChatCompletionRequest) -> frozenset[int]:
        # The model's end-of-sequence tokens (unless ignore_eos), and the request's own
        eos = frozenset() if request.ignore_eos else self._tokenizer.eos_token_ids
        asked = (self._token_id(t, "stop_token_ids", t) for t in request.stop_token_ids or ())
        return eos | frozenset(asked)

    def _logit_bias(self, biases: dict[str, float]) -> tuple[tuple[int, float], ...]:
        # -> (token id, bias) pairs; the keys are ids written as strings, as JSON keys are
        return tuple(
            (self._token_id(int(key) if key.isdecimal() else -1, "logit_bias", key), bias)
            for key, bias in biases.items()
        )

    def _token_id(self, token: int, param: str, given: object) -> int:
        """`token`, checked to be an id of the model's vocabulary; `given`: as the request
        wrote it."""
        vocab = self._engine.vocab_size
        if not 0 <= token < vocab:
            raise InvalidRequestError(
                f"{param} takes token ids from 0 to {vocab - 1}, not {given!r}.", param=param
            )
        return token

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

    async def _steps(
        self, chat: PreparedChat, keep_special: tuple[str, ...]
    ) -> AsyncGenerator[_Step, None]:
        """Engine outputs as final text; the last step carries the finish reason.

        However this ends before the engine finished (a stop string, an error, the consumer
        closing it or being cancelled), the engine request is aborted at once.
        """
        detokenizer = self._tokenizer.detokenizer(chat.stop, keep_special=keep_special)
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
        prompt_tokens_details=PromptTokensDetails(cached_tokens=output.num_cached_tokens),
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
