"""The data directory's SQLite store: WAL, a versioned schema, one process at a time."""

from __future__ import annotations

import hashlib
import inspect
import sqlite3
from pathlib import Path

import pytest

from headrace.batch import SCHEMA_VERSION, MetadataStore
from headrace.batch import store as store_module


def test_a_new_store_has_the_schema_in_wal_mode(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "data")
    try:
        assert (tmp_path / "data" / "headrace.sqlite3").exists()
        assert store.version() == SCHEMA_VERSION
        assert store.query("PRAGMA journal_mode") == [("wal",)]
        assert store.query("SELECT name FROM sqlite_master WHERE name = 'files'") == [("files",)]
    finally:
        store.close()


def test_reopening_keeps_what_was_committed(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    with store.transaction() as db:
        db.execute(
            "INSERT INTO files (id, owner, filename, purpose, bytes, created_at) "
            "VALUES ('file-1', '', 'a.jsonl', 'batch', 3, 10)"
        )
    store.close()
    # Another connection sees it: it was committed before transaction() returned.
    store = MetadataStore(tmp_path)
    try:
        assert store.query("SELECT id FROM files") == [("file-1",)]
        assert store.version() == SCHEMA_VERSION
    finally:
        store.close()


def test_a_failed_transaction_is_rolled_back(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    try:
        with pytest.raises(RuntimeError), store.transaction() as db:
            db.execute(
                "INSERT INTO files (id, owner, filename, purpose, bytes, created_at) "
                "VALUES ('file-1', '', 'a.jsonl', 'batch', 3, 10)"
            )
            raise RuntimeError("midway")
        assert store.query("SELECT id FROM files") == []
    finally:
        store.close()


def test_a_second_process_on_the_directory_is_refused(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    with pytest.raises(ValueError, match="another headrace process is using it"):
        MetadataStore(tmp_path)
    store.close()
    MetadataStore(tmp_path).close()  # closing let it go


def test_a_store_from_a_newer_headrace_is_refused(tmp_path: Path) -> None:
    MetadataStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "headrace.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match=f"newer than this headrace's {SCHEMA_VERSION}"):
        MetadataStore(tmp_path)
    # The refusal let the lock go: the directory opens once its schema is one this one knows.
    with sqlite3.connect(tmp_path / "headrace.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    MetadataStore(tmp_path).close()


def test_a_data_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot use the data directory"):
        MetadataStore(tmp_path / "file" / "data")


def _version_2_store(path: Path, *, with_models: bool) -> None:
    """A version-2 store with one batch: as version 2's script made it, or as a development
    build's did that had added batches.models to that script in place."""
    first, second = store_module._MIGRATIONS[:2]
    assert isinstance(first, str) and isinstance(second, str)
    with sqlite3.connect(path / "headrace.sqlite3") as db:
        db.executescript(first + second)
        if with_models:
            db.execute("ALTER TABLE batches ADD COLUMN models TEXT")
        column, value = ("models,", "'[\"m\"]',") if with_models else ("", "")
        db.execute(
            f"INSERT INTO batches (id, owner, endpoint, input_file_id, {column}"
            " completion_window, status, created_at, expires_at) VALUES ('batch_1', 'k',"
            f" '/v1/chat/completions', 'file-1', {value} '24h', 'in_progress', 1, 2)"
        )
        db.execute("PRAGMA user_version = 2")


@pytest.mark.parametrize("with_models", [False, True])
def test_a_version_2_store_opens_with_its_batches_and_their_models(
    tmp_path: Path, with_models: bool
) -> None:
    _version_2_store(tmp_path, with_models=with_models)
    store = MetadataStore(tmp_path)
    try:
        assert store.version() == SCHEMA_VERSION
        models = '["m"]' if with_models else None
        assert store.query("SELECT id, status, models FROM batches") == [
            ("batch_1", "in_progress", models)
        ]
    finally:
        store.close()


# sha256 of each version's script (or of its function's source): a committed migration never
# changes, since stores made by it exist. A change to the schema appends a version.
_MIGRATION_DIGESTS = (
    "c4191dd94a37b0d33e47365b47c05f0108804e87af941501ef3ee902964d2b33",
    "bba05d870ab3bc0ade5faea2bfd704610fe1a9e55f589381c1d14b5bda23056e",
    "f34c76f5a3573a5af212c2b19775059073e3bc45bb5645ec6a87901e55c612df",
    "6a543ef270a3d3fc7a077b8341068f55c0850d2258208a780ed104906c7e453d",
    "690d6e52bce1a92922bbc586d6c5d03d60dd6ccc0155287dcc26434e1077068e",
)


def test_committed_migrations_never_change() -> None:
    digests = tuple(
        hashlib.sha256(
            (migration if isinstance(migration, str) else inspect.getsource(migration)).encode()
        ).hexdigest()
        for migration in store_module._MIGRATIONS
    )
    assert digests[: len(_MIGRATION_DIGESTS)] == _MIGRATION_DIGESTS, "append a migration instead"
    assert len(digests) == len(_MIGRATION_DIGESTS), "add the new migration's digest here"
