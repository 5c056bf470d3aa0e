"""Files and batch jobs, without HTTP: SQLite and files under the data directory."""

from headrace.batch.files import MAX_LIST_LIMIT, UPLOAD_PURPOSES, FileStore, Upload, check_purpose
from headrace.batch.objects import DeletedFile, FileList, FileObject, FilePurpose, ListOrder
from headrace.batch.store import SCHEMA_VERSION, MetadataStore

__all__ = [
    "MAX_LIST_LIMIT",
    "SCHEMA_VERSION",
    "UPLOAD_PURPOSES",
    "DeletedFile",
    "FileList",
    "FileObject",
    "FilePurpose",
    "FileStore",
    "ListOrder",
    "MetadataStore",
    "Upload",
    "check_purpose",
]
