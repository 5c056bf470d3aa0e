"""The sequences of one request on the engine, as final text: n samples of each prompt.

Each sequence is its own engine request, "<request id>-<index>" (the request's id when it is
the only one), whose tokens a detokenizer turns into final text (stop strings cut it, and end
it on the engine at once). The samples of a prompt
after the first wait in the engine until the first has its prompt computed: they then find it
in the prefix cache instead of computing it again. Their steps come out interleaved as they are
produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Literal

from headrace.engine.client import EngineClient
from headrace.engine.outputs import Priority, SamplingParams, TokenOutput
from headrace.errors import InternalError, ServiceUnavailableError
from headrace.serving.protocol import ChatCompletionRequest, CompletionRequest, StreamOptions
from headrace.serving.tokenizer import TokenizerLike

__all__ = ["Generation", "Step", "StreamUsage", "run_sequences"]


@dataclass(frozen=True)
class Generation:
    # The response's id; the engine's request ids add "-<index>" when there are several.
    request_id: str
    # The prompts; each is sampled n times.
    prompts: tuple[list[int], ...]
    # Samples of each prompt: sequence index = prompt's index * n + sample's index.
    n: int
    # How every sequence is sampled; with a seed, sample i of a prompt uses seed + i.
    params: SamplingParams
    # Strings that end a sequence's text.
    stop: tuple[str, ...]
    # Whether the text ends with the stop string that ended it.
    include_stop: bool
    # Special tokens whose text is kept (a tool-call parser's markers).
    keep_special: tuple[str, ...] = ()
    # How urgently the engine runs it: interactive online, batch for the Batch API.
    priority: Priority = Priority.INTERACTIVE

    @classmethod
    def of(
        cls,
        request: ChatCompletionRequest | CompletionRequest,
        request_id: str,
        prompts: tuple[list[int], ...],
        params: SamplingParams,
        keep_special: tuple[str, ...] = (),
        priority: Priority = Priority.INTERACTIVE,
    ) -> Generation:
        """The request's n samples of each prompt, cut at its stop strings."""
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        return cls(
            request_id=request_id,
            prompts=prompts,
            n=request.n or 1,
            params=params,
            stop=tuple(string for string in stop if string),
            include_stop=request.include_stop_str_in_output,
            keep_special=keep_special,
            priority=priority,
        )


@dataclass(frozen=True)
class StreamUsage:
    # Stream chunks carry `usage`: null, then the counts in a last chunk without choices.
    include: bool
    # With include, every chunk carries the counts so far instead of null (vLLM's
    # continuous_usage_stats).
    continuous: bool

    @classmethod
    def of(cls, options: StreamOptions | None) -> StreamUsage:
        include = bool(options and options.include_usage)
        return cls(include, include and bool(options and options.continuous_usage_stats))


@dataclass(frozen=True)
class Step:
    # The sequence (the choice's index).
    index: int
    # Text made final since the sequence's previous step; may be empty.
    text: str
    # What the engine handed out for the sequence in this step.
    output: TokenOutput
    # Set on the sequence's last step: "stop" also when a stop string ended it.
    finish_reason: Literal["stop", "length"] | None


@dataclass(frozen=True)
class _Sequence:
    # Its index among the request's sequences.
    index: int
    # Its engine request's id.
    request_id: str
    # Its prompt.
    prompt_token_ids: list[int]
    # Its own parameters (its own seed).
    params: SamplingParams
    # The engine request whose prompt it shares and waits for; None: it goes at once.
    after: str | None


async def run_sequences(
    engine: EngineClient, tokenizer: TokenizerLike, generation: Generation
) -> AsyncGenerator[Step, None]:
    """Every sequence's steps, interleaved; each sequence's last step has a finish_reason.

    An error of one sequence ends them all. However this ends (an error, the consumer closing it
    or being cancelled), every engine request still running is aborted at once.
    """
    sequences = _sequences(generation)
    if len(sequences) == 1:
        async with aclosing(_steps(engine, tokenizer, generation, sequences[0])) as steps:
            async for step in steps:
                yield step
        return
    queue: asyncio.Queue[Step | BaseException | None] = asyncio.Queue()

    async def pump(sequence: _Sequence) -> None:
        try:
            async with aclosing(_steps(engine, tokenizer, generation, sequence)) as steps:
                async for step in steps:
                    queue.put_nowait(step)
        except Exception as exc:
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(sequence)) for sequence in sequences]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sequences(generation: Generation) -> list[_Sequence]:
    params, n = generation.params, generation.n
    several = len(generation.prompts) * n > 1
    sequences: list[_Sequence] = []
    for p, prompt in enumerate(generation.prompts):
        for i in range(n):
            # A signed 64-bit seed plus at most 127 stays within what torch takes (below 2**64).
            own = params if params.seed is None or i == 0 else replace(params, seed=params.seed + i)
            index = p * n + i
            request_id = f"{generation.request_id}-{index}" if several else generation.request_id
            after = None if i == 0 else sequences[p * n].request_id
            sequences.append(_Sequence(index, request_id, prompt, own, after))
    return sequences


async def _steps(
    engine: EngineClient, tokenizer: TokenizerLike, generation: Generation, sequence: _Sequence
) -> AsyncGenerator[Step, None]:
    """One sequence's engine outputs as final text; the last step carries the finish reason."""
    detokenizer = tokenizer.detokenizer(
        generation.stop, keep_special=generation.keep_special, include_stop=generation.include_stop
    )
    index = sequence.index
    # Closing the engine's generator before its last output aborts the engine request.
    outputs = engine.generate(
        sequence.request_id,
        sequence.prompt_token_ids,
        sequence.params,
        after=sequence.after,
        priority=generation.priority,
    )
    async with aclosing(outputs):
        async for output in outputs:
            if output.finish_reason == "abort":
                raise ServiceUnavailableError("The engine dropped the request; please retry.")
            text = detokenizer.push(output.token_ids)
            if detokenizer.stopped:
                yield Step(index, text, output, "stop")
                return
            if output.finish_reason is not None:
                yield Step(index, text + detokenizer.flush(), output, output.finish_reason)
                return
            yield Step(index, text, output, None)
    raise InternalError("The engine ended the request without a finish reason.")
