"""Files and batch jobs, without HTTP: SQLite and files under the data directory.

The runner (`headrace.batch.runner`), which runs requests through serving, is imported apart:
importing this package loads no model stack.
"""

from headrace.batch.batches import (
    COMPLETION_WINDOW_SECONDS,
    MAX_BATCH_LIST,
    BatchStore,
)
from headrace.batch.files import MAX_LIST_LIMIT, UPLOAD_PURPOSES, FileStore, Upload, check_purpose
from headrace.batch.lines import (
    MAX_REQUESTS,
    BatchLine,
    LineResult,
    LineUsage,
    ResultKind,
    read_lines,
)
from headrace.batch.objects import (
    BATCH_ENDPOINTS,
    Batch,
    BatchEndpoint,
    BatchError,
    BatchErrors,
    BatchList,
    BatchRequestCounts,
    BatchStatus,
    CreateBatchRequest,
    DeletedFile,
    ExpiresAfter,
    FileList,
    FileObject,
    FilePurpose,
    ListOrder,
)
from headrace.batch.rows import BatchJob
from headrace.batch.store import SCHEMA_VERSION, MetadataStore

__all__ = [
    "BATCH_ENDPOINTS",
    "COMPLETION_WINDOW_SECONDS",
    "MAX_BATCH_LIST",
    "MAX_LIST_LIMIT",
    "MAX_REQUESTS",
    "SCHEMA_VERSION",
    "UPLOAD_PURPOSES",
    "Batch",
    "BatchEndpoint",
    "BatchError",
    "BatchErrors",
    "BatchJob",
    "BatchLine",
    "BatchList",
    "BatchRequestCounts",
    "BatchStatus",
    "BatchStore",
    "CreateBatchRequest",
    "DeletedFile",
    "ExpiresAfter",
    "FileList",
    "FileObject",
    "FilePurpose",
    "FileStore",
    "LineResult",
    "LineUsage",
    "ListOrder",
    "MetadataStore",
    "ResultKind",
    "Upload",
    "check_purpose",
    "read_lines",
]
