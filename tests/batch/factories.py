"""A data directory's stores, for the batch room's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from headrace.batch import FileStore, MetadataStore
from tests.fakes import FakeClock


def make_files(data_dir: Path, clock: FakeClock | None = None) -> FileStore:
    """The files of `data_dir` (its store opened, or made), on `clock` if given."""
    store = MetadataStore(data_dir)
    return FileStore(store, clock or FakeClock())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """`parts`, one chunk each, as an upload's body arrives."""
    for part in parts:
        yield part


async def failing(parts: Iterable[bytes], error: Exception) -> AsyncIterator[bytes]:
    """`parts`, then `error`: a client gone mid-upload."""
    for part in parts:
        yield part
    raise error
