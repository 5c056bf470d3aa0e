"""Chat completions: a request becomes engine work; engine tokens become OpenAI objects.

`prepare` does every check and renders the prompt, so a bad request fails before a response
(or a stream) begins. `complete` then returns the whole answer; `stream` yields its chunks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from headrace.config import ServerConfig
from headrace.engine.client import EngineClient
from headrace.engine.outputs import Priority
from headrace.errors import InvalidRequestError
from headrace.serving.conversation import prompt_ending, template_messages, template_variables
from headrace.serving.generation import Generation, Step, StreamUsage, run_sequences
from headrace.serving.intake import Intake
from headrace.serving.logprobs import LogprobWriter
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import ChatCompletionRequest
from headrace.serving.reply import Reply
from headrace.serving.responses import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    TokenLogprob,
    Usage,
)
from headrace.serving.sampling import Sampling
from headrace.serving.tally import Observer, Recorder
from headrace.serving.tokenizer import TokenizerLike
from headrace.serving.tools import (
    OutputConstraint,
    ToolRequest,
    prepare_response_format,
    prepare_tools,
    template_tools,
)
from headrace.text import ToolCallFormat
from headrace.text.grammar import CompiledGrammar, GrammarCompiler, GrammarError

__all__ = ["ChatService", "PreparedChat"]


@dataclass(frozen=True)
class PreparedChat:
    # "chatcmpl-<hex>": the completion's id.
    request_id: str
    # The model name the client asked for, echoed in every response object.
    model: str
    # Unix seconds when the request was accepted: the `created` of every chunk.
    created: int
    # The rendered prompt, its n choices, and how they are sampled.
    generation: Generation
    # Whether and how stream chunks carry usage.
    usage: StreamUsage
    # How the reply is read for tool calls; None when the request allows none.
    tool_call_format: ToolCallFormat | None

    @property
    def most_tokens(self) -> int:
        """The prompt and the longest completions allowed: the most the request can cost."""
        generation = self.generation
        return len(generation.prompts[0]) + generation.n * generation.params.max_tokens


class _Choice:
    """One choice as its steps come: its reply, its log-probabilities, its finish."""

    def __init__(self, tool_call_format: ToolCallFormat | None) -> None:
        self.reply = Reply(tool_call_format)
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: FinishReason | None = None


class ChatService:
    """Runs chat completions on an engine."""

    def __init__(
        self,
        engine: EngineClient,
        tokenizer: TokenizerLike,
        models: ModelCatalog,
        sampling: Sampling,
        *,
        grammars: GrammarCompiler | None = None,
        tool_call_format: ToolCallFormat | None = None,
        max_waiting: int = ServerConfig.max_waiting,
        observe: Observer | None = None,
        keep_text: bool = False,
    ) -> None:
        """observe: takes each request's record as it ends; keep_text: records carry the
        prompt's and the replies' text."""
        self._engine = engine
        self._tokenizer = tokenizer
        self._intake = Intake(engine, models, max_waiting=max_waiting)
        self._sampling = sampling
        self._logprobs = LogprobWriter(tokenizer)
        # Compiles forced tool calls and response formats; None: constrained decoding is off.
        self._grammars = grammars
        # How replies are read for tool calls: the server's choice, else the template's.
        self._tool_call_format = tool_call_format or tokenizer.tool_call_format
        self._recorder = Recorder("chat", tokenizer, observe, keep_text=keep_text)

    def prepare(
        self, request: ChatCompletionRequest, priority: Priority = Priority.INTERACTIVE
    ) -> PreparedChat:
        """Checks the request and renders its prompt; raises HeadraceError, starts nothing.

        `priority`: how the engine runs it (Priority.BATCH for the Batch API's requests)."""
        self._intake.admit(request, priority)
        _check_supported(request)
        tools = prepare_tools(request)
        constraint = prepare_response_format(request, tools)
        messages = template_messages(request.messages)
        ending = prompt_ending(request.add_generation_prompt, request.continue_final_message)
        variables = template_variables(request.chat_template_kwargs)
        try:
            prompt = self._tokenizer.apply_chat_template(
                messages,
                tools=template_tools(tools.tools) if tools else None,
                add_generation_prompt=ending.add_generation_prompt,
                continue_final_message=ending.continue_final_message,
                variables=variables,
            )
        except ValueError as error:  # ChatTemplateError: the template refused the conversation
            raise InvalidRequestError(str(error), param="messages") from error
        tool_call_format = self._tool_call_format if tools and tools.allowed else None
        grammar = None
        if tools and tools.forced:
            # The grammar writes calls in a syntax it knows; the reply is read in that syntax.
            tool_call_format = self._tool_call_format.for_forced_calls
            grammar = self._tool_call_grammar(tools, tool_call_format)
        elif constraint is not None:
            grammar = self._output_grammar(constraint)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = self._sampling.params(request, len(prompt), grammar=grammar, logprobs=logprobs)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        markers = Reply(tool_call_format).markers
        return PreparedChat(
            request_id=request_id,
            model=request.model,
            created=int(time.time()),
            generation=Generation.of(request, request_id, (prompt,), params, markers, priority),
            usage=StreamUsage.of(request.stream_options),
            tool_call_format=tool_call_format,
        )

    async def complete(self, chat: PreparedChat) -> ChatCompletion:
        """The whole completion: every choice, once all are done."""
        choices = [_Choice(chat.tool_call_format) for _ in range(chat.generation.n)]
        with self._recorder.tally(chat.generation, chat.model) as tally:
            async with aclosing(self._steps(chat)) as steps:
                async for step in steps:
                    tally.add(step)
                    choice = choices[step.index]
                    choice.reply.feed(step.text, last=step.finish_reason is not None)
                    choice.logprobs += self._logprobs.chat(step.output.logprobs or ())
                    if step.finish_reason is not None:
                        choice.finish_reason = choice.reply.finish_reason(step.finish_reason)
                        tally.finish(step.index, choice.finish_reason)
        return ChatCompletion(
            id=chat.request_id,
            object="chat.completion",
            created=chat.created,
            model=chat.model,
            choices=[_whole_choice(chat, index, choice) for index, choice in enumerate(choices)],
            usage=tally.usage(),
        )

    async def stream(self, chat: PreparedChat) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The completion as chunks: each choice's role, its text as it comes, its finish; then
        the usage."""
        n = chat.generation.n
        replies = [Reply(chat.tool_call_format) for _ in range(n)]
        with self._recorder.tally(chat.generation, chat.model) as tally:
            for index in range(n):
                yield _chunk(chat, index, Delta(role="assistant", content=""))
            async with aclosing(self._steps(chat)) as steps:
                async for step in steps:
                    tally.add(step)
                    usage = tally.usage() if chat.usage.continuous else None
                    reply = replies[step.index]
                    deltas = reply.feed(step.text, last=step.finish_reason is not None)
                    logprobs = self._chunk_logprobs(chat, step)
                    if logprobs is not None and not deltas:
                        deltas = [Delta(content="")]  # the tokens' text is held back, not theirs
                    for delta in deltas:
                        yield _chunk(chat, step.index, delta, logprobs=logprobs, usage=usage)
                        logprobs = None
                    if step.finish_reason is not None:
                        finish = reply.finish_reason(step.finish_reason)
                        tally.finish(step.index, finish)
                        yield _chunk(chat, step.index, Delta(), finish, usage=usage)
            if chat.usage.include:
                yield _usage_chunk(chat, tally.usage())

    def _steps(self, chat: PreparedChat) -> AsyncGenerator[Step, None]:
        return run_sequences(self._engine, self._tokenizer, chat.generation)

    def _chunk_logprobs(self, chat: PreparedChat, step: Step) -> ChatLogprobs | None:
        if chat.generation.params.logprobs is None or not step.output.token_ids:
            return None
        return ChatLogprobs(content=self._logprobs.chat(step.output.logprobs or ()), refusal=None)

    def _tool_call_grammar(
        self, tools: ToolRequest, call_format: ToolCallFormat
    ) -> CompiledGrammar:
        functions = [tool.spec for tool in tools.callable_tools]
        return self._compile(
            lambda grammars: grammars.tool_calls(
                functions, most_calls=tools.most_forced_calls, format=call_format
            ),
            param="tools",
        )

    def _output_grammar(self, constraint: OutputConstraint) -> CompiledGrammar:
        kind, text, param = constraint.kind, constraint.text or "", constraint.param
        if kind == "regex":
            return self._compile(lambda grammars: grammars.regex(text), param)
        if kind == "grammar":
            return self._compile(lambda grammars: grammars.lark(text), param)
        if kind == "choice":
            return self._compile(lambda grammars: grammars.choice(constraint.choices), param)
        if constraint.schema is None:
            return self._compile(lambda grammars: grammars.json_object(), param)
        schema = dict(constraint.schema)
        return self._compile(
            lambda grammars: grammars.json_schema(schema, strict=constraint.strict), param
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


def _check_supported(request: ChatCompletionRequest) -> None:
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs to be true.", param="top_logprobs")
    if request.modalities is not None and "audio" in request.modalities:
        raise InvalidRequestError(
            "Audio output is not supported; 'modalities' may only be [\"text\"].",
            param="modalities",
        )
    if request.store:
        raise InvalidRequestError(
            "Stored completions are not supported; leave 'store' unset or false.", param="store"
        )


def _whole_choice(chat: PreparedChat, index: int, choice: _Choice) -> Choice:
    reply = choice.reply
    message = AssistantMessage(role="assistant", content=reply.content, refusal=None)
    if calls := reply.tool_calls:
        message.tool_calls = calls
    logprobs = None
    if chat.generation.params.logprobs is not None:
        logprobs = ChatLogprobs(content=choice.logprobs, refusal=None)
    assert choice.finish_reason is not None  # every choice's steps end on a finish
    return Choice(
        index=index, message=message, finish_reason=choice.finish_reason, logprobs=logprobs
    )


def _chunk(
    chat: PreparedChat,
    index: int,
    delta: Delta,
    finish_reason: FinishReason | None = None,
    *,
    logprobs: ChatLogprobs | None = None,
    usage: Usage | None = None,
) -> ChatCompletionChunk:
    choice = ChunkChoice(index=index, delta=delta, finish_reason=finish_reason, logprobs=logprobs)
    chunk = ChatCompletionChunk(
        id=chat.request_id,
        object="chat.completion.chunk",
        created=chat.created,
        model=chat.model,
        choices=[choice],
    )
    if chat.usage.include:
        chunk.usage = usage  # assigned, hence on the wire, as null unless continuous
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
