"""An offline batch: a batch input file run to an output file on the engine in this process,
without HTTP or a data directory (`headrace batch INPUT.jsonl -o OUTPUT.jsonl`).

The input is read as OpenAI reads a batch's (see headrace.batch.lines); its endpoint is the
`url` of its first request, and every other request must name it too. Each request runs as its
endpoint answers it online, at batch priority, up to `concurrency` at once. Every result, a
failed request's error response included, is one line of the output, in input order, each
written as soon as all those before it are; the lines go to a new file beside the output, which
replaces it only once all are written, so an existing output is never left half-written.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from headrace.batch.endpoints import Endpoints
from headrace.batch.lines import BatchLine, LineResult, read_lines
from headrace.batch.objects import BATCH_ENDPOINTS, BatchEndpoint, BatchError

__all__ = ["LineDone", "OfflineInput", "OfflineSummary", "OnDone", "read_input", "run_offline"]

# The endpoint of a file none of whose lines names one (read_lines then says what is wrong).
_FALLBACK_ENDPOINT: BatchEndpoint = "/v1/chat/completions"


@dataclass(frozen=True)
class OfflineInput:
    # Where every request goes: the url of the file's first request.
    endpoint: BatchEndpoint
    # The requests, in file order; none when the file is bad.
    lines: Sequence[BatchLine]
    # What is wrong with the file, in line order; empty for a good file.
    errors: Sequence[BatchError]


@dataclass(frozen=True)
class LineDone:
    # Whether the request failed: its output line holds an error response.
    failed: bool
    # Tokens generated for it (`usage.completion_tokens`); 0 for a failed one.
    completion_tokens: int


@dataclass(frozen=True)
class OfflineSummary:
    # Requests run.
    requests: int
    # Of them, those that failed.
    failed: int
    # Tokens generated for the others.
    completion_tokens: int
    # Wall-clock seconds from the first request started to the output in place.
    seconds: float

    def describe(self) -> str:
        """One line for a person: the counts, the time and the completion tokens a second."""
        rate = self.completion_tokens / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.requests} requests, {self.failed} failed, {self.completion_tokens} "
            f"completion tokens in {self.seconds:.1f} s ({rate:.1f} tok/s)"
        )


# Told of each request as its output line is written, in the order they finish.
OnDone = Callable[[LineDone], None]


def read_input(path: Path) -> OfflineInput:
    """The requests of the batch input file at `path`, and what is wrong with it."""
    endpoint = _endpoint(path)
    if isinstance(endpoint, BatchError):
        return OfflineInput(_FALLBACK_ENDPOINT, [], [endpoint])
    lines, errors = read_lines(path, endpoint)
    return OfflineInput(endpoint, lines, errors)


async def run_offline(
    endpoints: Endpoints,
    batch: OfflineInput,
    output: Path,
    *,
    concurrency: int,
    on_done: OnDone | None = None,
) -> OfflineSummary:
    """Runs every request of `batch`, up to `concurrency` at once, and puts the output file in
    place at `output` once each has its line; when it raises or is cancelled (Ctrl-C), the
    requests in flight are aborted and `output` is left as it was."""
    assert not batch.errors, "a bad input file has nothing to run"
    started = time.perf_counter()
    done: list[LineDone] = []
    running: set[asyncio.Task[LineResult]] = set()
    index_of: dict[asyncio.Task[LineResult], int] = {}
    with _replacing(output) as file:
        writer = _InOrder(file)

        async def take_some() -> None:
            """Waits for a request to finish, and writes what can be written."""
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                running.discard(task)
                result = task.result()
                writer.put(index_of.pop(task), result.output)
                done.append(_line_done(result))
                if on_done is not None:
                    on_done(done[-1])

        try:
            for index, line in enumerate(batch.lines):
                while len(running) >= concurrency:
                    await take_some()
                task = asyncio.create_task(endpoints.run(batch.endpoint, line))
                running.add(task)
                index_of[task] = index
            while running:
                await take_some()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    return OfflineSummary(
        requests=len(done),
        failed=sum(line.failed for line in done),
        completion_tokens=sum(line.completion_tokens for line in done),
        seconds=time.perf_counter() - started,
    )


def _endpoint(path: Path) -> BatchEndpoint | BatchError:
    """The url of the file's first line that names one, if headrace runs batches of it."""
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            try:
                request = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            url = request.get("url") if isinstance(request, dict) else None
            if not isinstance(url, str):
                continue
            for endpoint in BATCH_ENDPOINTS:
                if url == endpoint:
                    return endpoint
            return BatchError(
                code="invalid_request",
                message=f"The url '{url}' is not an endpoint batches run on; use one of: "
                f"{', '.join(BATCH_ENDPOINTS)}.",
                param="url",
                line=number,
            )
    return _FALLBACK_ENDPOINT


def _line_done(result: LineResult) -> LineDone:
    if result.kind != "completed":
        return LineDone(failed=True, completion_tokens=0)
    usage = orjson.loads(result.output)["response"]["body"].get("usage") or {}
    return LineDone(failed=False, completion_tokens=int(usage.get("completion_tokens", 0)))


class _InOrder:
    """Output lines written in input order, each as soon as every one before it is."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        # Lines finished before one ahead of them, by their index in the input.
        self._pending: dict[int, str] = {}
        # The index of the next line to write.
        self._next = 0

    def put(self, index: int, line: str) -> None:
        self._pending[index] = line
        while self._next in self._pending:
            self._file.write(self._pending.pop(self._next) + "\n")
            self._next += 1
        self._file.flush()


@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A new file beside `path`, put in its place when the block ends and removed when the
    block raises (a KeyboardInterrupt or a cancellation included)."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with partial.open("x", encoding="utf-8") as file:
            yield file
            os.fsync(file.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
