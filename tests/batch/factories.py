"""A data directory's stores, for the batch room's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson

from headrace.api.errors import status_of
from headrace.batch import Batch, BatchEndpoint, BatchStore, FileStore, MetadataStore
from headrace.batch.endpoints import Endpoints, TokenMeter
from headrace.batch.runner import BatchRunner
from headrace.serving import Services
from tests.fakes import FakeClock, FakeEngine, FakeServed, chat_body


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


def make_batches(files: FileStore) -> BatchStore:
    """The batches of `files`' data directory, on its clock."""
    return BatchStore(files.store, files, clock=files.clock)


def make_endpoints(
    engine: FakeEngine | None = None, concurrency: int = 4, meter: TokenMeter | None = None
) -> Endpoints:
    """The fake engine's chat and completion services, for batch requests: `concurrency` on
    the engine at once, batch tokens counted by `meter`."""
    services = Services.of(FakeServed(engine=engine or FakeEngine()))
    return Endpoints(
        services.chat, services.completions, status_of, concurrency=concurrency, meter=meter
    )


def make_runner(
    batches: BatchStore, engine: FakeEngine | None = None, concurrency: int = 4
) -> BatchRunner:
    """A runner of `batches` on the fake engine's chat and completion services."""
    return BatchRunner(batches, make_endpoints(engine, concurrency), concurrency=concurrency)


def request_line(custom_id: str, url: str = "/v1/chat/completions", **body: Any) -> bytes:
    """One line of a batch input file; `body` overrides a valid chat request's fields."""
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": chat_body(**body)}
    return orjson.dumps(request) + b"\n"


async def make_batch(
    batches: BatchStore,
    content: bytes,
    owner: str | None = None,
    endpoint: BatchEndpoint = "/v1/chat/completions",
) -> Batch:
    """A validating batch of an input file of `content`."""
    file = await batches.files.create(owner, "in.jsonl", "batch", chunks(content), None)
    return batches.create(owner, file.id, endpoint, None)


def read_file(files: FileStore, owner: str | None, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of a file."""
    assert file_id is not None
    with files.open_content(owner, file_id) as source:
        return [orjson.loads(line) for line in source.read().splitlines()]
