"""The OpenAI wire objects of the Files API, as pydantic models.

Every field is always on the wire (`expires_at` and the deprecated `status_details` are left
out: files here do not expire); `object` and `status` are fixed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["DeletedFile", "FileList", "FileObject", "FilePurpose", "ListOrder"]

# batch: uploaded by a client as a batch's input; batch_output: written by the server (a
# batch's output or error file).
FilePurpose = Literal["batch", "batch_output"]
# Newest first (desc) or oldest first (asc), by when each file was created.
ListOrder = Literal["asc", "desc"]


class FileObject(BaseModel):
    """OpenAI's `OpenAIFile`."""

    # file-<hex>.
    id: str
    # Always "file".
    object: Literal["file"] = "file"
    # Its size.
    bytes: int
    # Unix seconds when it was uploaded (or written).
    created_at: int
    # The name it was uploaded under.
    filename: str
    # What it is for.
    purpose: FilePurpose
    # Deprecated by OpenAI, still required by its schema: a stored file is always "processed".
    status: Literal["processed"] = "processed"


class FileList(BaseModel):
    """OpenAI's `ListFilesResponse`: one page of files."""

    # Always "list".
    object: Literal["list"] = "list"
    # The page's files, in the order asked for.
    data: list[FileObject]
    # The first and last file's ids; null on an empty page.
    first_id: str | None
    last_id: str | None
    # Whether more files follow the last one (ask with after=last_id).
    has_more: bool


class DeletedFile(BaseModel):
    """OpenAI's `DeleteFileResponse`."""

    # The deleted file's id.
    id: str
    # Always "file".
    object: Literal["file"] = "file"
    # Always true: a file that cannot be deleted is a 404.
    deleted: bool = True
