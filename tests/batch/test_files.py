"""FileStore: files by owner, their bytes on disk, crash-safe creation, pages of a list."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.batch import FileStore, MetadataStore
from headrace.errors import FileTooLargeError, InvalidRequestError, NotFoundError
from tests.batch.factories import chunks, failing, make_files
from tests.fakes import FakeClock
from tests.schema import validate

OWNER = "key_alice"
OTHER = "key_bob"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.5)


@pytest.fixture
def files(tmp_path: Path, clock: FakeClock) -> Iterator[FileStore]:
    files = make_files(tmp_path / "data", clock)
    yield files
    files.store.close()


def stored(files: FileStore) -> list[str]:
    """The names in the files directory."""
    return sorted(path.name for path in files.directory.iterdir())


async def test_a_file_is_kept_as_bytes_and_a_row(files: FileStore) -> None:
    file = await files.create(OWNER, "in.jsonl", "batch", chunks(b'{"a": 1}\n', b"{}\n"), 100)
    assert file.id.startswith("file-") and len(file.id) == len("file-") + 24
    assert (file.bytes, file.filename, file.purpose) == (12, "in.jsonl", "batch")
    assert file.created_at == 1_700_000_000
    validate(file.model_dump(), "OpenAIFile")
    assert file.model_dump()["object"] == "file" and file.status == "processed"
    assert files.get(OWNER, file.id) == file
    assert stored(files) == [file.id]
    with files.open_content(OWNER, file.id) as content:
        assert content.read() == b'{"a": 1}\n{}\n'


async def test_a_binary_stream_is_read_to_its_end(files: FileStore) -> None:
    data = bytes(range(256)) * 1000
    file = await files.create(None, "blob.jsonl", "batch", io.BytesIO(data), None)
    assert file.bytes == len(data)
    with files.open_content(None, file.id) as content:
        assert content.read() == data


async def test_an_empty_file_is_a_file(files: FileStore) -> None:
    file = await files.create(OWNER, "empty.jsonl", "batch", chunks(), 10)
    assert file.bytes == 0


@pytest.mark.parametrize("purpose", ["fine-tune", "batch_output", "assistants", "", "BATCH"])
async def test_only_batch_files_are_uploaded(files: FileStore, purpose: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        await files.create(OWNER, "in.jsonl", purpose, chunks(b"{}\n"), 10)
    assert error.value.param == "purpose"
    assert (
        f"'{purpose}' is not supported" in error.value.message and "'batch'" in error.value.message
    )
    assert stored(files) == []


async def test_the_server_writes_batch_output_files(files: FileStore) -> None:
    file = await files.place_output("batch_1_output.jsonl", chunks(b"x" * 1000))
    assert (file.purpose, file.bytes) == ("batch_output", 1000)
    validate(file.model_dump(), "OpenAIFile")
    assert stored(files) == [file.id] and files.list(OWNER).data == []  # placed, not recorded
    files.record(OWNER, file)
    assert files.get(OWNER, file.id) == file


async def test_output_placed_but_never_recorded_is_removed_at_the_next_opening(
    files: FileStore,
) -> None:
    await files.place_output("batch_1_output.jsonl", chunks(b"lost in a crash"))
    reopened = FileStore(files.store, files.clock)
    assert stored(reopened) == [] and reopened.list(OWNER).data == []


async def test_a_file_at_the_limit_is_kept_one_byte_more_is_not(files: FileStore) -> None:
    kept = await files.create(OWNER, "a.jsonl", "batch", chunks(b"x" * 6, b"y" * 4), 10)
    assert kept.bytes == 10
    with pytest.raises(FileTooLargeError) as error:
        await files.create(OWNER, "b.jsonl", "batch", chunks(b"x" * 6, b"y" * 5), 10)
    assert error.value.code == "file_too_large" and "10 bytes" in error.value.message
    assert stored(files) == [kept.id]
    assert [f.id for f in files.list(OWNER).data] == [kept.id]


async def test_a_failure_mid_stream_leaves_no_row_and_no_bytes(files: FileStore) -> None:
    with pytest.raises(ConnectionError):
        await files.create(
            OWNER, "a.jsonl", "batch", failing([b"x" * 100], ConnectionError()), 1000
        )
    assert stored(files) == []
    assert files.list(OWNER).data == []


async def test_a_failure_to_record_removes_the_bytes(
    files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def record(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "record", record)
    with pytest.raises(OSError, match="disk full"):
        await files.create(OWNER, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    assert stored(files) == []


async def test_strays_are_removed_at_open(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    kept = await files.create(OWNER, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    deleted = await files.create(OWNER, "b.jsonl", "batch", chunks(b"{}\n"), 100)
    # As a process killed midway leaves them: an upload's temp file, bytes renamed into place
    # before their row was recorded, and bytes whose delete did not finish.
    upload = files.begin(None)
    upload.write(b"half an upload")
    (files.directory / "file-00000000000000000000beef").write_bytes(b"no row")
    files.store.close()
    store = MetadataStore(tmp_path)
    with store.transaction() as db:
        db.execute("UPDATE files SET deleted_at = 1 WHERE id = ?", (deleted.id,))
    store.close()
    assert len(stored(files)) == 4
    files = make_files(tmp_path)
    try:
        assert stored(files) == [kept.id]
        assert files.get(OWNER, kept.id) == kept
    finally:
        files.store.close()


async def test_another_owners_file_is_not_found(files: FileStore) -> None:
    file = await files.create(OWNER, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    for owner in (OTHER, None):
        with pytest.raises(NotFoundError) as error:
            files.get(owner, file.id)
        assert error.value.message == f"No such File object: {file.id}"
        assert error.value.param == "id"
        with pytest.raises(NotFoundError):
            files.open_content(owner, file.id)
        with pytest.raises(NotFoundError):
            await files.delete(owner, file.id)
        assert files.list(owner).data == []
    assert files.get(OWNER, file.id) == file


async def test_no_key_is_one_shared_owner(files: FileStore) -> None:
    file = await files.create(None, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    assert files.get(None, file.id) == file
    assert [f.id for f in files.list(None).data] == [file.id]


async def test_delete_removes_row_and_bytes(files: FileStore) -> None:
    file = await files.create(OWNER, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    deleted = await files.delete(OWNER, file.id)
    assert deleted.model_dump() == {"id": file.id, "object": "file", "deleted": True}
    validate(deleted.model_dump(), "DeleteFileResponse")
    assert stored(files) == []
    with pytest.raises(NotFoundError):
        files.get(OWNER, file.id)
    with pytest.raises(NotFoundError):
        await files.delete(OWNER, file.id)
    with pytest.raises(NotFoundError):
        await files.delete(OWNER, "file-nonesuch")


async def test_content_opened_before_a_delete_stays_readable(files: FileStore) -> None:
    file = await files.create(OWNER, "a.jsonl", "batch", chunks(b"still here"), 100)
    with files.open_content(OWNER, file.id) as content:
        await files.delete(OWNER, file.id)
        assert content.read() == b"still here"


async def make_five(files: FileStore, clock: FakeClock) -> list[str]:
    """Five files, a second apart, one of them output; their ids oldest first."""
    ids = []
    for n in range(5):
        if n == 2:
            file = await files.place_output(f"{n}.jsonl", chunks(b"out"))
            files.record(OWNER, file)
        else:
            file = await files.create(OWNER, f"{n}.jsonl", "batch", chunks(b"in"), 100)
        ids.append(file.id)
        clock.advance(1)
    await files.create(OTHER, "theirs.jsonl", "batch", chunks(b"in"), 100)
    return ids


async def test_list_pages_newest_first(files: FileStore, clock: FakeClock) -> None:
    ids = await make_five(files, clock)
    everything = files.list(OWNER)
    assert [f.id for f in everything.data] == ids[::-1]
    assert (everything.first_id, everything.last_id, everything.has_more) == (ids[4], ids[0], False)
    validate(everything.model_dump(), "ListFilesResponse")
    first = files.list(OWNER, limit=2)
    assert [f.id for f in first.data] == [ids[4], ids[3]] and first.has_more
    second = files.list(OWNER, limit=2, after=first.last_id)
    assert [f.id for f in second.data] == [ids[2], ids[1]] and second.has_more
    third = files.list(OWNER, limit=2, after=second.last_id)
    assert [f.id for f in third.data] == [ids[0]] and not third.has_more


async def test_list_pages_oldest_first(files: FileStore, clock: FakeClock) -> None:
    ids = await make_five(files, clock)
    first = files.list(OWNER, limit=3, order="asc")
    assert [f.id for f in first.data] == ids[:3] and first.has_more
    rest = files.list(OWNER, limit=3, order="asc", after=first.last_id)
    assert [f.id for f in rest.data] == ids[3:] and not rest.has_more


async def test_files_of_one_second_keep_their_upload_order(files: FileStore) -> None:
    ids = [(await files.create(OWNER, "a", "batch", chunks(b"1"), 9)).id for _ in range(4)]
    assert [f.id for f in files.list(OWNER, order="asc").data] == ids
    assert [f.id for f in files.list(OWNER, limit=2, after=ids[2]).data] == ids[1::-1]


async def test_list_by_purpose(files: FileStore, clock: FakeClock) -> None:
    ids = await make_five(files, clock)
    assert [f.id for f in files.list(OWNER, purpose="batch_output").data] == [ids[2]]
    assert len(files.list(OWNER, purpose="batch").data) == 4
    assert files.list(OWNER, purpose="fine-tune").data == []


async def test_a_page_continues_after_a_deleted_file(files: FileStore, clock: FakeClock) -> None:
    ids = await make_five(files, clock)
    first = files.list(OWNER, limit=2)
    for file in first.data:  # as a client cleaning up page by page does
        await files.delete(OWNER, file.id)
    assert [f.id for f in files.list(OWNER, limit=2, after=first.last_id).data] == ids[2:0:-1]


async def test_an_empty_list(files: FileStore) -> None:
    page = files.list(OWNER)
    assert page.model_dump() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize("limit", [0, -1, 10_001])
async def test_a_limit_out_of_range(files: FileStore, limit: int) -> None:
    with pytest.raises(InvalidRequestError) as error:
        files.list(OWNER, limit=limit)
    assert error.value.param == "limit" and "from 1 to 10000" in error.value.message


async def test_after_an_unknown_or_anothers_file(files: FileStore) -> None:
    theirs = await files.create(OTHER, "a.jsonl", "batch", chunks(b"{}\n"), 100)
    for after in ("file-nonesuch", theirs.id):
        with pytest.raises(InvalidRequestError) as error:
            files.list(OWNER, after=after)
        assert error.value.param == "after"
