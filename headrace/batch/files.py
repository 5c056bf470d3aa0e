"""Files kept for their owners: bytes under `<data_dir>/files/<file-id>`, rows in the store.

A file's bytes go to a temp file beside the others, are synced, renamed into place, and only
then is its row recorded: a crash at any point leaves no row without its bytes. Bytes without
a live row (an upload cut short, a delete half done) are removed when the store is next opened.

Owners are API key ids; None (no keys, or a static key) is one shared owner. Another owner's
file is as unknown as one that never existed: NotFoundError, never a 403.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import BinaryIO

from headrace.batch.objects import DeletedFile, FileList, FileObject, FilePurpose, ListOrder
from headrace.batch.store import MetadataStore, stored_owner
from headrace.errors import FileTooLargeError, NotFoundError, invalid_value

__all__ = ["MAX_LIST_LIMIT", "UPLOAD_PURPOSES", "FileStore", "Upload", "check_purpose"]

# The purposes a client may upload a file for; the server writes batch_output files itself.
UPLOAD_PURPOSES: tuple[FilePurpose, ...] = ("batch",)
# Most files one list returns.
MAX_LIST_LIMIT = 10_000

_FILES = "files"
_TEMP_SUFFIX = ".tmp"
_CHUNK = 2**16
_COLUMNS = "id, bytes, created_at, filename, purpose, expires_at"
# A row of a file that exists: neither deleted nor expired (its one parameter: now).
_LIVE = "deleted_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"


def check_purpose(purpose: str) -> FilePurpose:
    """`purpose` if a client may upload a file for it, else InvalidRequestError naming it."""
    for allowed in UPLOAD_PURPOSES:
        if purpose == allowed:
            return allowed
    accepted = ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
    reason = f"'{purpose}' is not supported here; the supported values are {accepted}"
    raise invalid_value("purpose", reason)


class Upload:
    """A file being written: bytes in, then committed as a file or discarded.

    `write` refuses bytes past the limit with FileTooLargeError; after that, or any other
    failure, `discard` removes what was written. Nothing is seen by `FileStore` until `commit`.
    """

    def __init__(self, files: FileStore, limit: int | None) -> None:
        self._files = files
        # Most bytes it may hold; None: no limit.
        self._limit = limit
        # Its temp file, in the files directory.
        self._path = files.directory / f".{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        self._out: BinaryIO | None = self._path.open("xb")
        # Bytes written so far.
        self.size = 0

    def write(self, chunk: bytes) -> None:
        assert self._out is not None, "write after commit or discard"
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise FileTooLargeError(self._limit)
        self._out.write(chunk)

    async def commit(
        self,
        owner: str | None,
        filename: str,
        purpose: FilePurpose,
        expires_after: int | None = None,
    ) -> FileObject:
        """Syncs the bytes, moves them into place, records the row: the file, durably kept
        (for `expires_after` seconds, if given)."""
        file = await self.place(filename, purpose, expires_after)
        try:
            await asyncio.to_thread(self._files.record, owner, file)
        except BaseException:
            self._files.remove_bytes(file)
            raise
        return file

    async def place(
        self, filename: str, purpose: FilePurpose, expires_after: int | None = None
    ) -> FileObject:
        """Syncs the bytes and moves them into place, without a row: the caller records the
        file (`FileStore.insert`, in a transaction of its own) or removes its bytes. A crash
        before the row leaves bytes that the store's next opening removes."""
        return await asyncio.to_thread(self._place, filename, purpose, expires_after)

    def _place(self, filename: str, purpose: FilePurpose, expires_after: int | None) -> FileObject:
        assert self._out is not None, "placed after commit or discard"
        out, self._out = self._out, None
        try:
            out.flush()
            os.fsync(out.fileno())
        finally:
            out.close()
        created_at = int(self._files.clock())
        file = FileObject(
            id=f"file-{secrets.token_hex(12)}",
            bytes=self.size,
            created_at=created_at,
            filename=filename,
            purpose=purpose,
            expires_at=None if expires_after is None else created_at + expires_after,
        )
        try:
            self._path.rename(self._files.directory / file.id)
            _sync_directory(self._files.directory)
        except BaseException:
            self._path.unlink(missing_ok=True)
            raise
        return file

    def discard(self) -> None:
        """Removes what was written; nothing once committed."""
        if self._out is not None:
            self._out.close()
            self._out = None
            self._path.unlink(missing_ok=True)


class FileStore:
    """The files of a data directory, by owner."""

    def __init__(self, store: MetadataStore, clock: Callable[[], float] = time.time) -> None:
        """The files of `store`'s data directory; temp files and bytes without a live row that
        an earlier process left are removed."""
        # Where its rows are; the caller opened it and closes it.
        self.store = store
        # Unix seconds now; tests move it.
        self.clock = clock
        # Where the bytes are, one file per file id.
        self.directory = store.data_dir / _FILES
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._remove_strays()

    def begin(self, limit: int | None) -> Upload:
        """A new upload of at most `limit` bytes (None: no limit)."""
        return Upload(self, limit)

    async def create(
        self,
        owner: str | None,
        filename: str,
        purpose: str,
        chunks: AsyncIterable[bytes] | BinaryIO,
        limit: int | None,
    ) -> FileObject:
        """A client's file, of the bytes of `chunks` (or a binary stream, read to its end).

        InvalidRequestError for a purpose not in UPLOAD_PURPOSES, before anything is read;
        FileTooLargeError once the bytes pass `limit`, leaving nothing behind.
        """
        return await self._create(owner, filename, check_purpose(purpose), chunks, limit)

    async def place_output(
        self,
        filename: str,
        chunks: AsyncIterable[bytes] | BinaryIO,
        expires_after: int | None = None,
    ) -> FileObject:
        """A file the server writes (a batch's output or errors): purpose batch_output, no
        limit, kept for `expires_after` seconds if given; its bytes in place without a row,
        as `Upload.place`."""
        upload = await self._write(chunks, None)
        try:
            return await upload.place(filename, "batch_output", expires_after)
        finally:
            upload.discard()

    async def _create(
        self,
        owner: str | None,
        filename: str,
        purpose: FilePurpose,
        chunks: AsyncIterable[bytes] | BinaryIO,
        limit: int | None,
    ) -> FileObject:
        upload = await self._write(chunks, limit)
        try:
            return await upload.commit(owner, filename, purpose)
        finally:
            upload.discard()

    async def _write(self, chunks: AsyncIterable[bytes] | BinaryIO, limit: int | None) -> Upload:
        """An upload holding the bytes of `chunks`; nothing is left if writing fails."""
        upload = self.begin(limit)
        try:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    upload.write(chunk)
            else:
                while chunk := await asyncio.to_thread(chunks.read, _CHUNK):
                    upload.write(chunk)
        except BaseException:
            upload.discard()
            raise
        return upload

    def record(self, owner: str | None, file: FileObject) -> None:
        """Records the row of a file whose bytes are in place (Upload.commit's last step)."""
        with self.store.transaction() as db:
            self.insert(db, owner, file)

    def insert(self, db: sqlite3.Connection, owner: str | None, file: FileObject) -> None:
        """Adds the row of a file whose bytes are in place, in the caller's transaction."""
        db.execute(
            f"INSERT INTO files (owner, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                stored_owner(owner),
                file.id,
                file.bytes,
                file.created_at,
                file.filename,
                file.purpose,
                file.expires_at,
            ),
        )

    def remove_bytes(self, file: FileObject) -> None:
        """Removes the bytes of a file placed but never recorded."""
        (self.directory / file.id).unlink(missing_ok=True)

    def get(self, owner: str | None, file_id: str) -> FileObject:
        """The file, or NotFoundError if `owner` has none of that id."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM files WHERE id = ? AND owner = ? AND {_LIVE}",
            (file_id, stored_owner(owner), int(self.clock())),
        )
        if not rows:
            raise _not_found(file_id)
        return _file(rows[0])

    def list(
        self,
        owner: str | None,
        purpose: str | None = None,
        limit: int = MAX_LIST_LIMIT,
        after: str | None = None,
        order: ListOrder = "desc",
    ) -> FileList:
        """One page of `owner`'s files (of `purpose` only, if given), newest first for desc;
        `after`: the last id of the previous page (InvalidRequestError if not one of theirs)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise invalid_value("limit", f"must be from 1 to {MAX_LIST_LIMIT}, not {limit}")
        where = ["owner = ?", _LIVE]
        parameters: list[object] = [stored_owner(owner), int(self.clock())]
        if purpose is not None:
            where.append("purpose = ?")
            parameters.append(purpose)
        if after is not None:  # gone ones too: a page's last file may be deleted since
            found = self.store.query(
                "SELECT seq FROM files WHERE id = ? AND owner = ?", (after, stored_owner(owner))
            )
            if not found:
                raise invalid_value("after", f"no file has the id '{after}'")
            where.append("seq > ?" if order == "asc" else "seq < ?")
            parameters.append(found[0][0])
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY seq {order.upper()} LIMIT ?",
            (*parameters, limit + 1),
        )
        files = [_file(row) for row in rows[:limit]]
        return FileList(
            data=files,
            first_id=files[0].id if files else None,
            last_id=files[-1].id if files else None,
            has_more=len(rows) > limit,
        )

    def open_content(self, owner: str | None, file_id: str) -> BinaryIO:
        """The file's bytes, open for reading from the start (the caller closes it); they stay
        readable even if the file is deleted meanwhile."""
        self.get(owner, file_id)
        try:
            return (self.directory / file_id).open("rb")
        except FileNotFoundError:  # deleted between the two
            raise _not_found(file_id) from None

    async def delete(self, owner: str | None, file_id: str) -> DeletedFile:
        """Deletes the file: its row at once (kept as a tombstone, so that it still works as a
        list's `after`), then its bytes."""
        return await asyncio.to_thread(self._delete, owner, file_id)

    def _delete(self, owner: str | None, file_id: str) -> DeletedFile:
        with self.store.transaction() as db:
            deleted = db.execute(
                "UPDATE files SET deleted_at = ? WHERE id = ? AND owner = ? AND deleted_at IS NULL",
                (int(self.clock()), file_id, stored_owner(owner)),
            ).rowcount
        if not deleted:
            raise _not_found(file_id)
        (self.directory / file_id).unlink(missing_ok=True)
        return DeletedFile(id=file_id)

    def remove_expired(self) -> int:
        """Deletes the files past their `expires_at` (their rows kept as tombstones, as a
        delete's); how many. They were gone to clients already: this frees their bytes."""
        with self.store.transaction() as db:
            rows = db.execute(
                "UPDATE files SET deleted_at = expires_at "
                "WHERE deleted_at IS NULL AND expires_at <= ? RETURNING id",
                (int(self.clock()),),
            ).fetchall()
        for (file_id,) in rows:
            (self.directory / file_id).unlink(missing_ok=True)
        return len(rows)

    def _remove_strays(self) -> None:
        """Removes temp files and bytes without a row, left by a process that stopped midway,
        and expired files."""
        self.remove_expired()
        rows = self.store.query("SELECT id FROM files WHERE deleted_at IS NULL")
        live = {file_id for (file_id,) in rows}
        for path in self.directory.iterdir():
            if path.name not in live:
                path.unlink(missing_ok=True)


def _file(row: tuple[object, ...]) -> FileObject:
    file_id, size, created_at, filename, purpose, expires_at = row
    return FileObject.model_validate(
        {
            "id": file_id,
            "bytes": size,
            "created_at": created_at,
            "filename": filename,
            "purpose": purpose,
            "expires_at": expires_at,
        }
    )


def _not_found(file_id: str) -> NotFoundError:
    return NotFoundError(f"No such File object: {file_id}", param="id")


def _sync_directory(directory: Path) -> None:
    """Makes a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
