"""The batch runner: takes every unfinished batch to its end, each in a task of its own.

validating (the input file read and checked; a bad one: failed) -> in_progress (each request
without a result runs through serving at batch priority, up to `concurrency` of a batch at
once, sharing the engine slots of `Endpoints` with the other batches, and its result row is
kept as soon as it finishes) -> finalizing (the output and error files written
from the rows, in input order) -> completed. A batch asked to cancel stops: its requests in
flight are aborted (their tasks cancelled, which closes their engine generators) and it ends
cancelled with the files of what finished. Past its window, no request starts: those without
a result are `batch_expired` in the error file and the batch ends expired.

At start (and each time it wakes) it takes every unfinished batch, so one left in progress,
finalizing or cancelling by a crash resumes: only lines without a result row run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import orjson

from headrace.batch.batches import BatchStore
from headrace.batch.endpoints import Endpoints
from headrace.batch.lines import BatchLine, LineResult, read_lines
from headrace.batch.objects import BatchError, FileObject
from headrace.batch.rows import BatchJob

__all__ = ["BatchRunner"]

logger = logging.getLogger("headrace.batch")

_MISSING_INPUT = BatchError(
    code="missing_input",
    message="The batch's input is no longer in the data directory; create the batch again.",
)
_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


class BatchRunner:
    """Runs the batches of a store; `run` is its task for the server's lifetime."""

    def __init__(
        self,
        batches: BatchStore,
        endpoints: Endpoints,
        *,
        concurrency: int = 16,
        poll_seconds: float = 5.0,
    ) -> None:
        self._batches = batches
        self._endpoints = endpoints
        # Requests of a batch in flight at once: enough to keep the engine's batch full.
        self._concurrency = concurrency
        # Seconds between looks at the store when nothing wakes it.
        self._poll_seconds = poll_seconds
        # Set when there may be work: a new batch, a cancel.
        self._wake = asyncio.Event()
        # Set, by batch id, when that batch is asked to cancel while it runs.
        self._cancels: dict[str, asyncio.Event] = {}

    def wake(self) -> None:
        """There may be a new batch to take."""
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        """The batch was moved to cancelling in the store: stop its requests now."""
        self._cancel_event(batch_id).set()
        self._wake.set()

    async def run(self) -> None:
        """Runs every unfinished batch, each in a task of its own, until cancelled; a batch
        whose run fails unexpectedly is logged, and taken again at the next look."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                self._wake.clear()
                try:
                    jobs = await asyncio.to_thread(self._batches.unfinished)
                except Exception:
                    logger.exception("the batch runner could not read the store; retrying")
                    jobs = []
                for job in jobs:
                    if job.batch.id not in tasks:
                        task = asyncio.create_task(self._process_logged(job.batch.id))
                        tasks[job.batch.id] = task
                        task.add_done_callback(functools.partial(_forget, tasks, job.batch.id))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def run_pending(self) -> None:
        """Takes every unfinished batch to its end, all at once."""
        while jobs := self._batches.unfinished():
            await asyncio.gather(*(self.process(job.batch.id) for job in jobs))

    async def _process_logged(self, batch_id: str) -> None:
        try:
            await self.process(batch_id)
        except Exception:
            logger.exception("batch %s failed to run; it is taken again later", batch_id)

    async def process(self, batch_id: str) -> None:
        """Takes one batch from where it stands to its end."""
        job = self._batches.job(batch_id)
        batch = job.batch
        path = self._batches.input_path(batch_id)
        if not path.exists():  # a data directory restored without it: nothing can run
            self._batches.fail(batch_id, [_MISSING_INPUT])
            return
        lines, errors = await asyncio.to_thread(read_lines, path, batch.endpoint)
        if batch.status == "validating":
            if errors:
                self._batches.fail(batch_id, errors)
                return
            self._batches.start(batch_id, len(lines))
        if self._batches.status(batch_id) == "in_progress":
            await self._run_lines(job, lines)
        await self._end(batch_id, lines)

    async def _run_lines(self, job: BatchJob, lines: Sequence[BatchLine]) -> None:
        """Runs each line without a result, until all have one, the batch is cancelled, or its
        window closes."""
        batch = job.batch
        done = self._batches.done_lines(batch.id)
        cancelled = self._cancel_event(batch.id)
        running: set[asyncio.Task[None]] = set()
        try:
            for line in lines:
                if line.line in done:
                    continue
                while len(running) >= self._concurrency and not cancelled.is_set():
                    await self._wait_some(running, cancelled)
                if cancelled.is_set() or self._batches.clock() >= batch.expires_at:
                    break
                running.add(asyncio.create_task(self._run_line(job, line)))
            while running and not cancelled.is_set():
                await self._wait_some(running, cancelled)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._cancels.pop(batch.id, None)

    async def _wait_some(self, running: set[asyncio.Task[None]], cancelled: asyncio.Event) -> None:
        """Waits for a request to finish, or the batch to be cancelled; raises what a finished
        request raised."""
        waiter = asyncio.create_task(cancelled.wait())
        try:
            finished, _ = await asyncio.wait({*running, waiter}, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
        for task in finished & running:
            running.discard(task)
            task.result()

    async def _run_line(self, job: BatchJob, line: BatchLine) -> None:
        """Runs one request and keeps its result."""
        result = await self._endpoints.run(
            job.batch.endpoint, line, owner=job.owner, models=job.models
        )
        await asyncio.to_thread(self._batches.record, job.batch.id, {line.line: result})

    async def _end(self, batch_id: str, lines: Sequence[BatchLine]) -> None:
        """Writes the batch's files and ends it: cancelled, expired, or completed."""
        self._cancels.pop(batch_id, None)
        job = self._batches.job(batch_id)
        done = self._batches.done_lines(batch_id)
        final: Literal["completed", "expired", "cancelled"] = "cancelled"
        if job.batch.status != "cancelling":
            if len(done) < len(lines):  # only the window closing leaves lines without one
                expired = {
                    line.line: LineResult("expired", _expired(line))
                    for line in lines
                    if line.line not in done
                }
                await asyncio.to_thread(self._batches.record, batch_id, expired)
                final = "expired"
            elif self._batches.finalize(batch_id) or job.batch.status == "finalizing":
                final = "completed"
            # else: cancelled between the two reads
        output = await self._place(job, "output", completed=True)
        error = await self._place(job, "error", completed=False)
        self._batches.finish(batch_id, final, output, error)

    async def _place(self, job: BatchJob, name: str, *, completed: bool) -> FileObject | None:
        """The file of the batch's completed results (or of the others), its bytes in place
        but not recorded (`BatchStore.finish` records it); None if there are none."""
        batch_id = job.batch.id
        outputs = self._batches.outputs(batch_id, completed)
        if not outputs:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            for output in outputs:
                yield output.encode() + b"\n"

        return await self._batches.files.place_output(
            f"{batch_id}_{name}.jsonl", chunks(), job.output_expires_after
        )

    def _cancel_event(self, batch_id: str) -> asyncio.Event:
        return self._cancels.setdefault(batch_id, asyncio.Event())


def _forget(tasks: dict[str, asyncio.Task[None]], batch_id: str, _: object) -> None:
    del tasks[batch_id]


def _expired(line: BatchLine) -> str:
    return orjson.dumps(
        {
            "id": f"batch_req_{secrets.token_hex(16)}",
            "custom_id": line.custom_id,
            "response": None,
            "error": _EXPIRED,
        }
    ).decode()
