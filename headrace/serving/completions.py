"""Text completions (OpenAI's legacy /v1/completions): prompts in, their continuations out.

A prompt is a text, texts, token ids or lists of token ids; each is completed n times, choice
`index` = prompt's index * n + sample's index. With `echo` each choice's text starts with its
prompt; with `echo`, `logprobs` and `max_tokens: 0` the prompt is only scored, as
lm-evaluation-harness asks: its tokens' log-probabilities come from the same forward pass that
computes it (the first token has none: null).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

from headrace.config import ServerConfig
from headrace.engine.client import EngineClient
from headrace.engine.outputs import PositionLogprobs, Priority
from headrace.errors import InvalidRequestError
from headrace.serving.generation import Generation, Step, StreamUsage, run_sequences
from headrace.serving.intake import Intake
from headrace.serving.logprobs import LogprobWriter
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import CompletionRequest
from headrace.serving.responses import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    Usage,
)
from headrace.serving.sampling import Sampling
from headrace.serving.tally import Observer, Recorder
from headrace.serving.tokenizer import TokenizerLike

__all__ = ["CompletionService", "PreparedCompletion"]

# Most choices one request may ask for: prompts times n.
_MAX_CHOICES = 1024


@dataclass(frozen=True)
class PreparedCompletion:
    # "cmpl-<hex>": the completion's id.
    request_id: str
    # The model name the client asked for, echoed in every response object.
    model: str
    # Unix seconds when the request was accepted: the `created` of every chunk.
    created: int
    # The prompts, n choices each, and how they are sampled.
    generation: Generation
    # With echo: each prompt's text, which its choices' texts begin with; else None.
    echo: tuple[str, ...] | None
    # Whether and how stream chunks carry usage.
    usage: StreamUsage

    @property
    def most_tokens(self) -> int:
        """The prompts and the longest completions allowed: the most the request can cost."""
        generation = self.generation
        prompts = sum(len(prompt) for prompt in generation.prompts)
        return prompts + len(generation.prompts) * generation.n * generation.params.max_tokens


class _Choice:
    """Where one choice stands as its steps come."""

    def __init__(self) -> None:
        # Whether its first piece (with the echoed prompt) has gone out.
        self.started = False
        # Characters of text its tokens make so far: where the next token's text begins.
        self.offset = 0


class CompletionService:
    """Runs text completions on an engine."""

    def __init__(
        self,
        engine: EngineClient,
        tokenizer: TokenizerLike,
        models: ModelCatalog,
        sampling: Sampling,
        *,
        max_waiting: int = ServerConfig.max_waiting,
        observe: Observer | None = None,
        keep_text: bool = False,
    ) -> None:
        """observe: takes each request's record as it ends; keep_text: records carry the
        prompts' and the choices' text."""
        self._engine = engine
        self._tokenizer = tokenizer
        self._intake = Intake(engine, models, max_waiting=max_waiting)
        self._sampling = sampling
        self._logprobs = LogprobWriter(tokenizer)
        self._recorder = Recorder("completions", tokenizer, observe, keep_text=keep_text)

    def prepare(
        self, request: CompletionRequest, priority: Priority = Priority.INTERACTIVE
    ) -> PreparedCompletion:
        """Checks the request and tokenizes its prompts; raises HeadraceError, starts nothing.

        `priority`: how the engine runs it (Priority.BATCH for the Batch API's requests)."""
        self._intake.admit(request, priority)
        n = request.n or 1
        _check_supported(request, n)
        texts, prompts = self._prompts(request)
        if len(prompts) * n > _MAX_CHOICES:
            raise InvalidRequestError(
                f"At most {_MAX_CHOICES} choices (prompts times n) are allowed, not "
                f"{len(prompts) * n}.",
                param="n",
            )
        logprobs = request.logprobs
        params = self._sampling.params(
            request,
            max(len(prompt) for prompt in prompts),
            logprobs=logprobs,
            prompt_logprobs=logprobs if request.echo else None,
        )
        request_id = f"cmpl-{uuid.uuid4().hex}"
        return PreparedCompletion(
            request_id=request_id,
            model=request.model,
            created=int(time.time()),
            generation=Generation.of(
                request, request_id, tuple(prompts), params, priority=priority
            ),
            echo=tuple(texts) if request.echo else None,
            usage=StreamUsage.of(request.stream_options),
        )

    async def complete(self, prepared: PreparedCompletion) -> Completion:
        """The whole completion: every choice, once all are done."""
        generation = prepared.generation
        count = len(generation.prompts) * generation.n
        choices = [_Choice() for _ in range(count)]
        pieces: list[list[CompletionChoice]] = [[] for _ in range(count)]
        with self._recorder.tally(generation, prepared.model) as tally:
            async with aclosing(self._steps(prepared)) as steps:
                async for step in steps:
                    tally.add(step)
                    pieces[step.index].append(self._piece(prepared, choices[step.index], step))
        return self._response(
            prepared, [_joined(index, p) for index, p in enumerate(pieces)], tally.usage()
        )

    async def stream(self, prepared: PreparedCompletion) -> AsyncGenerator[Completion, None]:
        """The completion as chunks: each choice's text as it comes (after its echoed prompt),
        its finish on its last chunk; then the usage."""
        generation = prepared.generation
        choices = [_Choice() for _ in range(len(generation.prompts) * generation.n)]
        with self._recorder.tally(generation, prepared.model) as tally:
            async with aclosing(self._steps(prepared)) as steps:
                async for step in steps:
                    tally.add(step)
                    piece = self._piece(prepared, choices[step.index], step)
                    if (
                        piece.text
                        or piece.finish_reason
                        or (piece.logprobs and piece.logprobs.tokens)
                    ):
                        usage = tally.usage() if prepared.usage.continuous else None
                        chunk = self._response(prepared, [piece])
                        if prepared.usage.include:
                            chunk.usage = usage  # assigned: on the wire, null unless continuous
                        yield chunk
            if prepared.usage.include:
                yield self._response(prepared, [], tally.usage())

    def _steps(self, prepared: PreparedCompletion) -> AsyncGenerator[Step, None]:
        return run_sequences(self._engine, self._tokenizer, prepared.generation)

    def _piece(self, prepared: PreparedCompletion, choice: _Choice, step: Step) -> CompletionChoice:
        """What the step adds to its choice: its text and tokens, after the echoed prompt on the
        choice's first piece."""
        generation = prepared.generation
        text, token_ids = step.text, step.output.token_ids
        positions: list[PositionLogprobs | None] = list(step.output.logprobs or ())
        if not choice.started:
            choice.started = True
            if prepared.echo is not None:
                prompt = step.index // generation.n
                text = prepared.echo[prompt] + text
                token_ids = generation.prompts[prompt] + token_ids
                positions = [None, *(step.output.prompt_logprobs or ()), *positions]
        if step.output.stop_logprobs is not None:
            # The stop token is no text, but scorers read its log-probability (lm-evaluation-
            # harness reads the prompt's and one generated token's): it is listed last.
            token_ids = [*token_ids, step.output.stop_logprobs.chosen.token_id]
            positions.append(step.output.stop_logprobs)
        logprobs = None
        if generation.params.logprobs is not None:
            logprobs = self._logprobs.completion(token_ids, positions, choice.offset)
            choice.offset += self._logprobs.text_length(token_ids)
        return CompletionChoice(
            index=step.index, text=text, logprobs=logprobs, finish_reason=step.finish_reason
        )

    def _prompts(self, request: CompletionRequest) -> tuple[list[str], list[list[int]]]:
        """Each prompt's text and tokens; raises InvalidRequestError for an empty prompt or a
        token id outside the vocabulary."""
        given = request.prompt
        many = isinstance(given, list) and bool(given) and not isinstance(given[0], int)
        # Texts or token lists; pydantic made them all of one kind.
        items = cast(Sequence[str | list[int]], given if many else [given])
        texts, prompts = [], []
        for number, item in enumerate(items):
            param = f"prompt.{number}" if many else "prompt"
            if isinstance(item, str):
                text, tokens = item, self._tokenizer.encode_prompt(item)
            else:
                tokens = [self._sampling.token_id(t, param, t) for t in item]
                text = self._tokenizer.decode(tokens)
            if not tokens:
                raise InvalidRequestError("The prompt must not be empty.", param=param)
            texts.append(text)
            prompts.append(tokens)
        return texts, prompts

    @staticmethod
    def _response(
        prepared: PreparedCompletion, choices: list[CompletionChoice], usage: Usage | None = None
    ) -> Completion:
        completion = Completion(
            id=prepared.request_id,
            object="text_completion",
            created=prepared.created,
            model=prepared.model,
            choices=choices,
        )
        if usage is not None:
            completion.usage = usage
        return completion


def _check_supported(request: CompletionRequest, n: int) -> None:
    if request.suffix is not None:
        raise InvalidRequestError("suffix is not supported.", param="suffix")
    if request.best_of is not None and request.best_of != n:
        raise InvalidRequestError(
            "best_of is supported only equal to n (every sample is returned).", param="best_of"
        )


def _joined(index: int, pieces: list[CompletionChoice]) -> CompletionChoice:
    """A choice's pieces as one."""
    logprobs = None
    if pieces[0].logprobs is not None:
        columns = [piece.logprobs for piece in pieces if piece.logprobs is not None]
        logprobs = CompletionLogprobs(
            tokens=[token for column in columns for token in column.tokens],
            token_logprobs=[value for column in columns for value in column.token_logprobs],
            top_logprobs=[top for column in columns for top in column.top_logprobs],
            text_offset=[offset for column in columns for offset in column.text_offset],
        )
    return CompletionChoice(
        index=index,
        text="".join(piece.text for piece in pieces),
        logprobs=logprobs,
        finish_reason=pieces[-1].finish_reason,
    )
