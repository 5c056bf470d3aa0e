"""The data directory's metadata: one SQLite file in WAL mode, its schema versioned.

Every write is committed, and synced, before the call that made it returns. The directory is
owned by one process at a time: opening it takes an exclusive lock that closing (or dying) lets
go, so that a second server on the same directory is refused rather than sharing its files.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "MetadataStore", "stored_owner"]


def _add_batch_models(db: sqlite3.Connection) -> str:
    """Version 3: batches.models, a JSON list of the models the owner's key may use (when the
    batch was made), or NULL: any. Some version-2 stores have it already: a development build
    once added it to version 2's script in place."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
    return "" if "models" in columns else "ALTER TABLE batches ADD COLUMN models TEXT;"


# The schema, one script per version: version N is the first N scripts run in order. A new
# version appends a script (or a function of the database that returns it); a store of an
# older version runs the rest at open. A script once committed never changes:
# tests/batch/test_store.py holds their digests.
_MIGRATIONS: Sequence[str | Callable[[sqlite3.Connection], str]] = (
    """
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- upload order: ties in created_at break by it
        id TEXT NOT NULL UNIQUE,                -- file-<hex>
        owner TEXT NOT NULL,                    -- the API key's id; '' for the shared owner
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,                  -- batch (uploaded) or batch_output (written)
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,            -- Unix seconds
        deleted_at INTEGER                      -- Unix seconds; the row stays as a list cursor
    );
    CREATE INDEX files_by_owner ON files (owner, seq);
    """,
    """
    CREATE TABLE batches (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: the runner's, and lists'
        id TEXT NOT NULL UNIQUE,                -- batch_<hex>
        owner TEXT NOT NULL,                    -- the API key's id; '' for the shared owner
        endpoint TEXT NOT NULL,                 -- /v1/chat/completions or /v1/completions
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,        -- 24h
        status TEXT NOT NULL,                   -- OpenAI's Batch.status
        metadata TEXT,                          -- JSON object of strings, or NULL
        errors TEXT,                            -- JSON list of BatchError (failed), or NULL
        output_file_id TEXT,
        error_file_id TEXT,
        created_at INTEGER NOT NULL,            -- Unix seconds, as every *_at
        expires_at INTEGER NOT NULL,            -- created_at + the completion window
        in_progress_at INTEGER,
        finalizing_at INTEGER,
        completed_at INTEGER,
        failed_at INTEGER,
        expired_at INTEGER,
        cancelling_at INTEGER,
        cancelled_at INTEGER,
        total INTEGER NOT NULL DEFAULT 0,       -- request counts; completed and failed are
        completed INTEGER NOT NULL DEFAULT 0,   -- counted in the transaction that writes the
        failed INTEGER NOT NULL DEFAULT 0       -- result row
    );
    CREATE INDEX batches_by_owner ON batches (owner, seq);
    CREATE INDEX batches_by_status ON batches (status, seq);
    CREATE TABLE batch_results (
        batch_id TEXT NOT NULL,
        line INTEGER NOT NULL,                  -- the request's line in the input, from 1
        kind TEXT NOT NULL,                     -- completed, failed, or expired
        output TEXT NOT NULL,                   -- its line of the output (or error) file
        PRIMARY KEY (batch_id, line)
    ) WITHOUT ROWID;
    """,
    _add_batch_models,
    """
    ALTER TABLE batches ADD COLUMN model TEXT;  -- as its first completed request named it
    -- The usage of its completed requests, counted with their results.
    ALTER TABLE batches ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
    """,
    """
    ALTER TABLE files ADD COLUMN expires_at INTEGER;  -- Unix seconds it is gone at; NULL: never
    -- Seconds its output and error files live from their creation; NULL: until deleted.
    ALTER TABLE batches ADD COLUMN output_expires_after INTEGER;
    """,
)
# The version a store has once opened.
SCHEMA_VERSION = len(_MIGRATIONS)

_DATABASE = "headrace.sqlite3"
_LOCK = "lock"


class MetadataStore:
    """The SQLite database of a data directory; safe to use from several threads."""

    def __init__(self, data_dir: Path) -> None:
        """Opens (creating if need be) the store of `data_dir`, migrated to SCHEMA_VERSION.

        ValueError if the directory cannot be used, is held by another process, or was written
        by a newer headrace.
        """
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = _lock(data_dir / _LOCK)
        except OSError as error:
            raise ValueError(f"cannot use the data directory {data_dir}: {error}") from None
        try:
            self._db = sqlite3.connect(
                data_dir / _DATABASE, check_same_thread=False, timeout=10, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk when it returns, power loss included.
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate(data_dir)
        except (sqlite3.Error, ValueError) as error:
            os.close(self._lock_fd)
            raise ValueError(f"cannot open the data directory {data_dir}: {error}") from None
        # Where it lives.
        self.data_dir = data_dir
        # One statement or transaction at a time on the one connection.
        self._mutex = threading.Lock()

    def _migrate(self, data_dir: Path) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"its schema is version {version}, newer than this headrace's {SCHEMA_VERSION}"
            )
        for number in range(version, SCHEMA_VERSION):
            migration = _MIGRATIONS[number]
            script = migration if isinstance(migration, str) else migration(self._db)
            self._db.executescript(
                f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {number + 1}; COMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one immediate transaction, committed (and synced) on leaving,
        rolled back if the block raises."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        with self._mutex:
            return self._db.execute(sql, parameters).fetchall()

    def version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def close(self) -> None:
        """Closes the database and lets another process open the directory."""
        with self._mutex:
            self._db.close()
            os.close(self._lock_fd)


def _lock(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive lock; OSError if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError("another headrace process is using it") from None
    return fd


def stored_owner(owner: str | None) -> str:
    """An owner as its rows name it: an API key's id, or '' for the shared owner (None)."""
    return "" if owner is None else owner
