"""Batches kept for their owners: rows in the store, each with its results, one row a request.

A batch's input bytes are hard-linked under `<data_dir>/batches/<batch-id>.jsonl` when it is
created, so that deleting the input file does not take a running batch's requests away; the
link goes once the batch ends. A request's result row and the count it adds are written in one
transaction, and a line that has a row is never run again: a result is durable before it is
counted, and a batch resumed after a crash repeats none.

Another owner's batch is as unknown as one that never existed: NotFoundError.
"""

from __future__ import annotations

import builtins
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import orjson

from headrace.batch.files import FileStore
from headrace.batch.lines import LineResult
from headrace.batch.objects import (
    Batch,
    BatchEndpoint,
    BatchError,
    BatchList,
    BatchStatus,
    FileObject,
)
from headrace.batch.rows import COLUMNS, TIME_COLUMNS, UNFINISHED, BatchJob, job_of
from headrace.batch.store import MetadataStore, stored_owner
from headrace.errors import InvalidRequestError, NotFoundError, invalid_value

__all__ = ["COMPLETION_WINDOW_SECONDS", "MAX_BATCH_LIST", "BatchStore"]

# The one completion window: 24 hours.
COMPLETION_WINDOW_SECONDS = 24 * 3600
# Most batches one list returns.
MAX_BATCH_LIST = 100

_INPUTS = "batches"


class BatchStore:
    """The batches of a data directory, by owner."""

    def __init__(
        self, store: MetadataStore, files: FileStore, clock: Callable[[], float] = time.time
    ) -> None:
        """The batches of `store`; input links of batches that ended (or were never recorded)
        are removed."""
        # Where its rows are; the caller opened it and closes it.
        self.store = store
        # Where input files are read and output files written.
        self.files = files
        # Unix seconds now; tests move it.
        self.clock = clock
        # The input bytes of each unfinished batch.
        self.directory = store.data_dir / _INPUTS
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._remove_strays()

    def create(
        self,
        owner: str | None,
        input_file_id: str,
        endpoint: BatchEndpoint,
        metadata: dict[str, str] | None,
        models: frozenset[str] | None = None,
        output_expires_after: int | None = None,
    ) -> Batch:
        """A new batch, validating, of `owner`'s file `input_file_id` (NotFoundError if none;
        InvalidRequestError unless its purpose is batch); its requests may name only `models`
        (None: any); its output and error files live `output_expires_after` seconds from their
        creation (None: until deleted)."""
        try:
            file = self.files.get(owner, input_file_id)
        except NotFoundError as error:
            raise NotFoundError(error.message, param="input_file_id") from None
        if file.purpose != "batch":
            raise invalid_value(
                "input_file_id", f"the file's purpose is '{file.purpose}', not 'batch'"
            )
        batch_id = f"batch_{secrets.token_hex(16)}"
        link = self.input_path(batch_id)
        try:
            os.link(self.files.directory / input_file_id, link)
        except FileNotFoundError:  # deleted meanwhile
            raise NotFoundError(
                f"No such File object: {input_file_id}", param="input_file_id"
            ) from None
        now = int(self.clock())
        try:
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO batches (id, owner, models, endpoint, input_file_id, "
                    "completion_window, status, metadata, created_at, expires_at, "
                    "output_expires_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        batch_id,
                        stored_owner(owner),
                        None if models is None else orjson.dumps(sorted(models)).decode(),
                        endpoint,
                        input_file_id,
                        "24h",
                        "validating",
                        None if metadata is None else orjson.dumps(metadata).decode(),
                        now,
                        now + COMPLETION_WINDOW_SECONDS,
                        output_expires_after,
                    ),
                )
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        return self.get(owner, batch_id)

    def get(self, owner: str | None, batch_id: str) -> Batch:
        """The batch, or NotFoundError if `owner` has none of that id."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM batches WHERE id = ? AND owner = ?",
            (batch_id, stored_owner(owner)),
        )
        if not rows:
            raise NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id")
        return job_of(rows[0]).batch

    def list(self, owner: str | None, limit: int = 20, after: str | None = None) -> BatchList:
        """One page of `owner`'s batches, newest first; `after`: the last id of the previous
        page (InvalidRequestError if not one of theirs)."""
        if not 1 <= limit <= MAX_BATCH_LIST:
            raise invalid_value("limit", f"must be from 1 to {MAX_BATCH_LIST}, not {limit}")
        where, parameters = "owner = ?", [stored_owner(owner)]
        if after is not None:
            found = self.store.query(
                "SELECT seq FROM batches WHERE id = ? AND owner = ?", (after, stored_owner(owner))
            )
            if not found:
                raise invalid_value("after", f"no batch has the id '{after}'")
            where += " AND seq < ?"
            parameters.append(found[0][0])
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?",
            (*parameters, limit + 1),
        )
        batches = [job_of(row).batch for row in rows[:limit]]
        return BatchList(
            data=batches,
            first_id=batches[0].id if batches else None,
            last_id=batches[-1].id if batches else None,
            has_more=len(rows) > limit,
        )

    def cancel(self, owner: str | None, batch_id: str) -> Batch:
        """Asks the batch to stop: cancelling (the runner then ends it cancelled). A batch
        already cancelling or cancelled is left as it is; one that ended otherwise, or is
        finalizing, is InvalidRequestError."""
        status = self.get(owner, batch_id).status
        if status in ("validating", "in_progress"):
            with self.store.transaction() as db:
                moved = db.execute(
                    "UPDATE batches SET status = 'cancelling', cancelling_at = ? "
                    "WHERE id = ? AND status IN ('validating', 'in_progress')",
                    (int(self.clock()), batch_id),
                ).rowcount
            if not moved:  # it moved on meanwhile: answer for where it is now
                return self.cancel(owner, batch_id)
        elif status not in ("cancelling", "cancelled"):
            raise InvalidRequestError(
                f"Cannot cancel a batch with status '{status}'.", param="batch_id"
            )
        return self.get(owner, batch_id)

    # The runner's side.

    def unfinished(self) -> builtins.list[BatchJob]:
        """Every batch not ended, oldest first."""
        marks = ", ".join("?" * len(UNFINISHED))
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM batches WHERE status IN ({marks}) ORDER BY seq",
            UNFINISHED,
        )
        return [job_of(row) for row in rows]

    def job(self, batch_id: str) -> BatchJob:
        rows = self.store.query(f"SELECT {COLUMNS} FROM batches WHERE id = ?", (batch_id,))
        assert rows, f"no batch {batch_id}"
        return job_of(rows[0])

    def input_path(self, batch_id: str) -> Path:
        """Where the batch's input bytes are while it runs."""
        return self.directory / f"{batch_id}.jsonl"

    def fail(self, batch_id: str, errors: Sequence[BatchError]) -> None:
        """Ends a batch whose input is bad (or gone): failed, with what is wrong."""
        data = orjson.dumps([error.model_dump() for error in errors]).decode()
        self._move(batch_id, UNFINISHED, "failed", errors=data)
        self.input_path(batch_id).unlink(missing_ok=True)

    def start(self, batch_id: str, total: int) -> None:
        """A validated batch of `total` requests is in progress (unless cancelled meanwhile)."""
        with self.store.transaction() as db:
            db.execute("UPDATE batches SET total = ? WHERE id = ?", (total, batch_id))
        self._move(batch_id, ("validating",), "in_progress")

    def finalize(self, batch_id: str) -> bool:
        """Every request of an in-progress batch has its result: finalizing; whether it was
        in progress (a batch cancelled meanwhile is not)."""
        return self._move(batch_id, ("in_progress",), "finalizing")

    def finish(
        self,
        batch_id: str,
        status: Literal["completed", "expired", "cancelled"],
        output: FileObject | None,
        error: FileObject | None,
    ) -> None:
        """Ends the batch with its output and error files, placed but not yet recorded: their
        rows and the batch's end are one transaction, so a crash leaves either both (the batch
        ended) or neither (the batch ends again when resumed, and the bytes placed are strays
        the next opening removes). Its input link goes."""
        owner = self.job(batch_id).owner
        placed = [file for file in (output, error) if file is not None]
        try:
            with self.store.transaction() as db:
                for file in placed:
                    self.files.insert(db, owner, file)
                self._move_in(
                    db,
                    batch_id,
                    UNFINISHED,
                    status,
                    output_file_id=None if output is None else output.id,
                    error_file_id=None if error is None else error.id,
                )
        except BaseException:
            for file in placed:
                self.files.remove_bytes(file)
            raise
        self.input_path(batch_id).unlink(missing_ok=True)

    def status(self, batch_id: str) -> BatchStatus:
        return self.job(batch_id).batch.status

    def count_by_status(self) -> dict[str, int]:
        """How many batches, of every owner, are in each status that has any."""
        rows = self.store.query("SELECT status, COUNT(*) FROM batches GROUP BY status", ())
        return {str(status): int(count) for status, count in rows}

    def done_lines(self, batch_id: str) -> set[int]:
        """The lines that have their result."""
        rows = self.store.query("SELECT line FROM batch_results WHERE batch_id = ?", (batch_id,))
        return {line for (line,) in rows}

    def record(self, batch_id: str, results: Mapping[int, LineResult]) -> int:
        """Keeps the result of each line and counts it (and a completed one's tokens), in one
        transaction; a line that already has its result keeps it, uncounted again. The number
        newly kept."""
        added = {"completed": 0, "failed": 0}
        tokens = {"input": 0, "cached": 0, "output": 0}
        model: str | None = None
        with self.store.transaction() as db:
            for line, result in results.items():
                inserted = db.execute(
                    "INSERT OR IGNORE INTO batch_results (batch_id, line, kind, output) "
                    "VALUES (?, ?, ?, ?)",
                    (batch_id, line, result.kind, result.output),
                ).rowcount
                added["completed" if result.kind == "completed" else "failed"] += inserted
                if inserted and result.usage is not None:
                    model = model or result.usage.model
                    tokens["input"] += result.usage.prompt_tokens
                    tokens["cached"] += result.usage.cached_tokens
                    tokens["output"] += result.usage.completion_tokens
            db.execute(
                "UPDATE batches SET completed = completed + ?, failed = failed + ?, "
                "input_tokens = input_tokens + ?, cached_tokens = cached_tokens + ?, "
                "output_tokens = output_tokens + ?, model = COALESCE(model, ?) WHERE id = ?",
                (
                    added["completed"],
                    added["failed"],
                    *(tokens["input"], tokens["cached"], tokens["output"]),
                    model,
                    batch_id,
                ),
            )
        return added["completed"] + added["failed"]

    def outputs(self, batch_id: str, completed: bool) -> builtins.list[str]:
        """The output lines of its completed requests (or of the others), in input order."""
        condition = "kind = 'completed'" if completed else "kind != 'completed'"
        rows = self.store.query(
            f"SELECT output FROM batch_results WHERE batch_id = ? AND {condition} ORDER BY line",
            (batch_id,),
        )
        return [output for (output,) in rows]

    def _move(
        self,
        batch_id: str,
        sources: Sequence[BatchStatus],
        status: BatchStatus,
        **columns: str | None,
    ) -> bool:
        """Moves the batch from one of `sources` to `status`, stamping its time; whether it
        moved."""
        with self.store.transaction() as db:
            return self._move_in(db, batch_id, sources, status, **columns)

    def _move_in(
        self,
        db: sqlite3.Connection,
        batch_id: str,
        sources: Sequence[BatchStatus],
        status: BatchStatus,
        **columns: str | None,
    ) -> bool:
        """`_move`, in the caller's transaction."""
        sets = ["status = ?", f"{TIME_COLUMNS[status]} = ?", *(f"{name} = ?" for name in columns)]
        marks = ", ".join("?" * len(sources))
        moved: int = db.execute(
            f"UPDATE batches SET {', '.join(sets)} WHERE id = ? AND status IN ({marks})",
            (status, int(self.clock()), *columns.values(), batch_id, *sources),
        ).rowcount
        return moved > 0

    def _remove_strays(self) -> None:
        live = {job.batch.id for job in self.unfinished()}
        for path in self.directory.iterdir():
            if path.name.removesuffix(".jsonl") not in live:
                path.unlink(missing_ok=True)

    def queued_requests(self) -> int:
        """Requests of in-progress batches, of every owner, still without a result."""
        rows = self.store.query(
            "SELECT COALESCE(SUM(total - completed - failed), 0) FROM batches "
            "WHERE status = 'in_progress'"
        )
        return int(rows[0][0])
