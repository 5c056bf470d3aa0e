"""The data directory's SQLite store: WAL, a versioned schema, one process at a time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from headrace.batch import SCHEMA_VERSION, MetadataStore


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
