"""Runs the engine's step loop on its own thread and streams each request's tokens to asyncio.

The event loop never waits on the model: requests and aborts cross to the engine thread
through a command queue read between steps, and each step's outputs cross back with
`call_soon_threadsafe` into one asyncio queue per request.

All torch work happens on that one thread, the model's loading included: torch's CPU thread
pool belongs to the thread that first uses it, and stepping on another thread than the one
that loaded the model measured half the decode speed (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from headrace.engine.llm_engine import LLMEngine, RequestOutput
from headrace.engine.outputs import EngineStats, Priority, SamplingParams, TokenOutput

__all__ = ["AsyncEngine", "EngineError"]

logger = logging.getLogger("headrace.engine")


class EngineError(RuntimeError):
    """The engine failed while running a request."""


@dataclass(frozen=True)
class _Add:
    # Id of the new request.
    request_id: str
    # Its prompt.
    prompt_token_ids: list[int]
    # How to sample it.
    params: SamplingParams
    # A request with the same prompt to wait for, if any.
    after: str | None
    # How urgently it runs.
    priority: Priority


@dataclass(frozen=True)
class _Abort:
    # Id of the request to drop.
    request_id: str


@dataclass(frozen=True)
class _AbortAll:
    """End every request, each stream with a last output whose finish_reason is "abort"."""


_Command = _Add | _Abort | _AbortAll | None  # None asks the thread to stop


class AsyncEngine:
    """An `EngineClient` over an `LLMEngine` stepping on a background thread."""

    def __init__(self, engine: LLMEngine, thread: ThreadPoolExecutor) -> None:
        """Use `build`: it makes the engine on the thread that will step it."""
        self.max_model_len = engine.max_model_len
        self.vocab_size = engine.vocab_size
        self.block_size = engine.kv_cache.block_size
        self.kv_cache_blocks = engine.kv_cache.num_blocks - 1  # the null block apart
        self._engine = engine
        self._thread = thread
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._streams: dict[str, asyncio.Queue[TokenOutput | EngineError]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: Future[None] | None = None
        self._stats = EngineStats(running=0, waiting=0)

    @classmethod
    def build(cls, make_engine: Callable[[], LLMEngine]) -> AsyncEngine:
        """Run `make_engine` (model loading and all) on the engine's own thread; its errors
        are raised here."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headrace-engine")
        try:
            engine = thread.submit(make_engine).result()
        except BaseException:
            thread.shutdown()
            raise
        return cls(engine, thread)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = self._thread.submit(self._run)

    def shutdown(self) -> None:
        """Stop stepping and end the thread; the engine cannot start again."""
        if self._running is not None:
            self._commands.put(None)
            self._running.result()
            self._running = None
        self._thread.shutdown()

    def stats(self) -> EngineStats:
        """As of the last step, but for `compiling`, which is as of now: an idle engine takes
        no step when its compilation ends."""
        return replace(self._stats, compiling=self._engine.compiling)

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        after: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> AsyncGenerator[TokenOutput, None]:
        if request_id in self._streams:
            raise ValueError(f"request id {request_id} is already in use")
        stream: asyncio.Queue[TokenOutput | EngineError] = asyncio.Queue()
        self._streams[request_id] = stream
        self._commands.put(_Add(request_id, prompt_token_ids, params, after, priority))
        finished = False
        try:
            while not finished:
                item = await stream.get()
                if isinstance(item, EngineError):
                    finished = True
                    raise item
                finished = item.finish_reason is not None
                yield item
        finally:
            del self._streams[request_id]
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    def abort_all(self) -> None:
        self._commands.put(_AbortAll())

    def _run(self) -> None:
        engine = self._engine
        while True:
            # Block for a command only when there is nothing to step.
            commands = [] if engine.has_work else [self._commands.get()]
            while not self._commands.empty():
                commands.append(self._commands.get_nowait())
            for command in commands:
                if command is None:
                    return
                self._apply(command)
            try:
                outputs = engine.step()
            except Exception as exc:
                logger.exception("engine step failed")
                self._fail_all(exc)
                continue
            self._stats = engine.stats()
            if outputs:
                self._publish(outputs)

    def _apply(self, command: _Add | _Abort | _AbortAll) -> None:
        engine = self._engine
        if isinstance(command, _Abort):
            engine.abort(command.request_id)
        elif isinstance(command, _AbortAll):
            self._publish(engine.abort_all())
        else:
            try:
                engine.add_request(
                    command.request_id,
                    command.prompt_token_ids,
                    command.params,
                    after=command.after,
                    priority=command.priority,
                )
            except Exception as exc:  # this request's fault (its grammar, say): it fails alone
                logger.exception("request %s could not start", command.request_id)
                self._deliver([(command.request_id, EngineError(f"request failed: {exc}"))])

    def _fail_all(self, exc: Exception) -> None:
        error = EngineError(f"engine step failed: {exc}")
        failed = self._engine.abort_all()
        self._stats = self._engine.stats()
        self._deliver([(out.request_id, error) for out in failed])

    def _publish(self, outputs: list[RequestOutput]) -> None:
        self._deliver(
            [
                (out.request_id, out.output if out.error is None else EngineError(out.error))
                for out in outputs
            ]
        )

    def _deliver(self, items: list[tuple[str, TokenOutput | EngineError]]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put, items)

    def _put(self, items: list[tuple[str, TokenOutput | EngineError]]) -> None:
        for request_id, item in items:
            stream = self._streams.get(request_id)
            if stream is not None:  # None: the consumer has already gone away
                stream.put_nowait(item)
