"""The OpenAI wire objects of the Files and Batch APIs, as pydantic models.

A file's every field is always on the wire but `expires_at`, there only for a file that expires
(the deprecated `status_details` is left out); `object` and `status` are fixed. A batch's unset
fields (a timestamp not reached yet, no output file) are left off the wire, as OpenAI's schema
types them as non-null when present (`Batch.dump`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BATCH_ENDPOINTS",
    "Batch",
    "BatchEndpoint",
    "BatchError",
    "BatchErrors",
    "BatchList",
    "BatchRequestCounts",
    "BatchStatus",
    "CreateBatchRequest",
    "DeletedFile",
    "ExpiresAfter",
    "FileList",
    "FileObject",
    "FilePurpose",
    "ListOrder",
]

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
    # Unix seconds when it is gone; None: kept until deleted (left off the wire).
    expires_at: int | None = Field(default=None, exclude_if=lambda value: value is None)


class ExpiresAfter(BaseModel):
    """OpenAI's file expiration policy: gone `seconds` after the file's creation."""

    model_config = ConfigDict(extra="forbid")

    # Only "created_at": the file's creation (not its batch's).
    anchor: Literal["created_at"]
    # From 1 hour to 30 days.
    seconds: int = Field(ge=3600, le=2_592_000)


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


# The routes a batch's requests may go to (each batch has one).
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions"]
BATCH_ENDPOINTS: tuple[BatchEndpoint, ...] = ("/v1/chat/completions", "/v1/completions")
# validating -> in_progress -> finalizing -> completed; failed (a bad input file); expired (its
# window passed); cancelling -> cancelled.
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class BatchError(BaseModel):
    """OpenAI's `BatchError`: what is wrong with the input file, and where."""

    # Machine-readable: "invalid_json_line", "duplicate_custom_id", "empty_file"...
    code: str
    # For a person.
    message: str
    # The field of the line at fault, if one is.
    param: str | None = None
    # The line of the input file (from 1), if the error is one line's.
    line: int | None = None


class BatchErrors(BaseModel):
    # Always "list".
    object: Literal["list"] = "list"
    # The errors found, in the order of the lines.
    data: list[BatchError]


class BatchRequestCounts(BaseModel):
    """OpenAI's `BatchRequestCounts`."""

    # Requests in the input file (0 until it is validated).
    total: int
    # Of them, those that got a response.
    completed: int
    # Of them, those that got an error (a bad request, or expired).
    failed: int


class InputTokensDetails(BaseModel):
    # Of the input tokens, those whose keys and values came from the prefix cache.
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    # Always 0: headrace's models do not reason apart from their output.
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """OpenAI's batch `usage`: the tokens of its completed requests, summed."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int = 0


class Batch(BaseModel):
    """OpenAI's `Batch`."""

    # batch_<hex>.
    id: str
    # Always "batch".
    object: Literal["batch"] = "batch"
    # Where every request of it goes.
    endpoint: BatchEndpoint
    # Why it failed validation; None unless it did.
    errors: BatchErrors | None = None
    # The file its requests were read from.
    input_file_id: str
    # Always "24h".
    completion_window: str
    # Where it stands.
    status: BatchStatus
    # The files of its responses and of its failed requests; None until written (or if empty).
    output_file_id: str | None = None
    error_file_id: str | None = None
    # Unix seconds when it was created, and when its window closes (created_at + 24 h).
    created_at: int
    expires_at: int
    # Unix seconds when each status was reached; None until it is.
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    # How its requests went.
    request_counts: BatchRequestCounts
    # The tokens of its completed requests.
    usage: BatchUsage = BatchUsage()
    # The model its requests named (as the first completed one named it); None until then.
    model: str | None = None
    # The client's own string pairs (at most 16); None if it gave none.
    metadata: dict[str, str] | None = None

    def dump(self) -> str:
        """The wire JSON: unset fields left off."""
        return self.model_dump_json(exclude_none=True)


class BatchList(BaseModel):
    """OpenAI's `ListBatchesResponse`: one page of batches, newest first."""

    # Always "list".
    object: Literal["list"] = "list"
    # The page's batches.
    data: list[Batch]
    # The first and last batch's ids; None on an empty page (left off the wire).
    first_id: str | None = None
    last_id: str | None = None
    # Whether more follow the last one (ask with after=last_id).
    has_more: bool

    def dump(self) -> str:
        """The wire JSON: each batch's unset fields left off (and the ids of an empty page)."""
        return self.model_dump_json(exclude_none=True)


class CreateBatchRequest(BaseModel):
    """OpenAI's `CreateBatchRequest`."""

    model_config = ConfigDict(extra="ignore")

    # The uploaded file (purpose batch) of the requests.
    input_file_id: str
    # Where every request goes.
    endpoint: BatchEndpoint
    # Only "24h".
    completion_window: str
    # Up to 16 string pairs the client keeps on the batch.
    metadata: dict[str, str] | None = None
    # When its output and error files expire; None: kept until deleted.
    output_expires_after: ExpiresAfter | None = None
