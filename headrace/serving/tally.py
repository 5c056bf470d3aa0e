"""A request's tally as its steps come (tokens, timing, how each choice ended), and the record
of it an observer is handed once the request ends, however it ends.

Timing follows vLLM's request metrics: time to first token and end-to-end latency from the
start of the generation, the time in the engine's queue (arrival to first scheduling, as the
engine measures it), prefill (first scheduling to first output), decode (first output to last),
and the interval between each sequence's successive outputs (inter-token latency per engine
step).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from headrace.engine.outputs import Priority
from headrace.serving.generation import Generation, Step
from headrace.serving.responses import PromptTokensDetails, Usage
from headrace.serving.tokenizer import TokenizerLike

__all__ = ["ChoiceEnd", "Endpoint", "Observer", "Recorder", "RequestRecord", "RequestTally"]

# The API a request came through.
Endpoint = Literal["chat", "completions"]
# How a choice ended: as its response says (tool_calls: the reply called tools), or cut short:
# "abort" when the consumer went away or was cancelled, "error" when an exception ended it.
ChoiceEnd = Literal["stop", "length", "tool_calls", "abort", "error"]


@dataclass(frozen=True)
class RequestRecord:
    # The response's id: chatcmpl-<hex> or cmpl-<hex>.
    request_id: str
    # The model name the client asked for.
    model: str
    # The API it came through.
    endpoint: Endpoint
    # How urgently the engine ran it (Priority.BATCH: a Batch API request).
    priority: Priority
    # Seconds from its arrival in the engine to its first scheduling; None if never scheduled.
    queue_s: float | None
    # Seconds from its first scheduling to its first output; None without an output.
    prefill_s: float | None
    # Seconds from its first output to its last; None without an output.
    decode_s: float | None
    # Seconds from the start of its generation to its first output; None without one.
    ttft_s: float | None
    # Seconds from the start of its generation to its end.
    e2e_s: float
    # Seconds between each sequence's successive outputs, one per output after its first.
    inter_token_s: tuple[float, ...]
    # Its usage: prompt tokens, those of them found in the prefix cache, tokens generated.
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    # How each choice ended, by index.
    finish_reasons: tuple[ChoiceEnd, ...]
    # With text recording on: each prompt's text, and each choice's output text; else None.
    prompts: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None


# Takes each request's record as the request ends; called on the event loop, so it must be quick.
Observer = Callable[[RequestRecord], None]


class RequestTally:
    """One request's counts, times and finishes as its steps come: each prompt once, every
    sequence's output."""

    def __init__(
        self, generation: Generation, model: str, endpoint: Endpoint, *, keep_text: bool = False
    ) -> None:
        self._generation = generation
        self._model = model
        self._endpoint = endpoint
        self._prompt_tokens = sum(len(prompt) for prompt in generation.prompts)
        # Tokens generated so far, by sequence.
        self._generated: dict[int, int] = {}
        # Prompt tokens found in the prefix cache, by the first sequence of each prompt.
        self._cached: dict[int, int] = {}
        # perf_counter() seconds: the generation's start, its first output, each sequence's
        # latest output.
        self._started = time.perf_counter()
        self._first: float | None = None
        self._latest: dict[int, float] = {}
        # Seconds between each sequence's successive outputs.
        self._intervals: list[float] = []
        # The engine's queue time, from the first output.
        self._queued: float | None = None
        # How each choice ended, by index, as far as known.
        self._finishes: dict[int, ChoiceEnd] = {}
        # With keep_text: each choice's text so far, in pieces, by index; else None.
        self._texts: dict[int, list[str]] | None = {} if keep_text else None

    def add(self, step: Step) -> None:
        now = time.perf_counter()
        index, output = step.index, step.output
        self._generated[index] = output.num_generated_tokens
        if index % self._generation.n == 0:
            self._cached[index] = output.num_cached_tokens
        latest = self._latest.get(index)
        if latest is not None:
            self._intervals.append(now - latest)
        elif self._first is None:
            self._first, self._queued = now, output.queued_s
        self._latest[index] = now
        if step.finish_reason is not None:
            self._finishes[index] = step.finish_reason
        if self._texts is not None:
            self._texts.setdefault(index, []).append(step.text)

    def finish(self, index: int, reason: ChoiceEnd) -> None:
        """The choice ended as its response says (a chat reply that called tools: tool_calls)."""
        self._finishes[index] = reason

    def usage(self) -> Usage:
        generated = sum(self._generated.values())
        return Usage(
            prompt_tokens=self._prompt_tokens,
            completion_tokens=generated,
            total_tokens=self._prompt_tokens + generated,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(self._cached.values())),
        )

    def record(self, cut: ChoiceEnd, prompts: tuple[str, ...] | None = None) -> RequestRecord:
        """The request's record as it ends now; choices not yet ended end with `cut`."""
        now = time.perf_counter()
        generation, first, queued = self._generation, self._first, self._queued
        count = len(generation.prompts) * generation.n
        ttft = None if first is None else first - self._started
        usage = self.usage()
        texts = self._texts
        return RequestRecord(
            request_id=generation.request_id,
            model=self._model,
            endpoint=self._endpoint,
            priority=generation.priority,
            queue_s=queued,
            prefill_s=None if ttft is None else max(0.0, ttft - (queued or 0.0)),
            decode_s=None if first is None else max(self._latest.values()) - first,
            ttft_s=ttft,
            e2e_s=now - self._started,
            inter_token_s=tuple(self._intervals),
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.prompt_tokens_details.cached_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reasons=tuple(self._finishes.get(index, cut) for index in range(count)),
            prompts=prompts,
            outputs=None
            if texts is None
            else tuple("".join(texts.get(index, ())) for index in range(count)),
        )


class Recorder:
    """Tallies each request a service runs and hands its record to an observer as it ends."""

    def __init__(
        self,
        endpoint: Endpoint,
        tokenizer: TokenizerLike,
        observe: Observer | None = None,
        *,
        keep_text: bool = False,
    ) -> None:
        """observe: what takes the records (None: nobody); keep_text: records carry the
        prompts' and the outputs' text (for --log-requests)."""
        self._endpoint = endpoint
        self._tokenizer = tokenizer
        self._observe = observe
        self._keep_text = keep_text

    @contextmanager
    def tally(self, generation: Generation, model: str) -> Iterator[RequestTally]:
        """A new tally of the request; when the block ends, its record goes to the observer.

        Choices not ended by then end with "abort" when the block is left by the consumer
        going away or being cancelled (GeneratorExit, CancelledError), "error" when by another
        exception.
        """
        tally = RequestTally(generation, model, self._endpoint, keep_text=self._keep_text)
        cut: ChoiceEnd = "abort"
        try:
            yield tally
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException:
            cut = "error"
            raise
        finally:
            if self._observe is not None:
                self._observe(tally.record(cut, self._prompts(generation)))

    def _prompts(self, generation: Generation) -> tuple[str, ...] | None:
        if not self._keep_text:
            return None
        return tuple(self._tokenizer.decode(prompt) for prompt in generation.prompts)
