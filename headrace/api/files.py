"""The Files API over HTTP: upload (streamed to disk), list, retrieve, download, delete.

Each key sees only its own files (`Grant.key_id` owns them; without keys, or with a static key,
all share one owner): another key's file is a 404, as one that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from headrace.api.auth import grant_of
from headrace.api.body_limit import declared_length
from headrace.api.multipart import FORM_SLACK, receive_form
from headrace.api.openapi import OpenApiDoc, download_responses, responses
from headrace.api.query import limit_of
from headrace.batch import (
    MAX_LIST_LIMIT,
    UPLOAD_PURPOSES,
    DeletedFile,
    ExpiresAfter,
    FileList,
    FileObject,
    FileStore,
    ListOrder,
    check_purpose,
)
from headrace.errors import FileTooLargeError, invalid_value, missing_parameter
from headrace.serving import invalid_request_from_validation

__all__ = ["FILES_PATH", "files_router"]

# The upload route: its body is limited by the file size limit, not the JSON body limit.
FILES_PATH = "/v1/files"
_CHUNK = 2**16

_EXPIRY_SCHEMA = ExpiresAfter.model_json_schema()
_UPLOAD_BODY: OpenApiDoc = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The file: JSON lines, one request each.",
                        },
                        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
                        **{
                            f"expires_after[{part}]": schema
                            for part, schema in _EXPIRY_SCHEMA["properties"].items()
                        },
                    },
                }
            }
        },
    }
}
_LIST_PARAMETERS: OpenApiDoc = {
    "parameters": [
        {"name": "purpose", "in": "query", "schema": {"type": "string"}},
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIST_LIMIT,
                "default": MAX_LIST_LIMIT,
            },
        },
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {
            "name": "order",
            "in": "query",
            "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"},
        },
    ]
}


def files_router(files: FileStore, max_file_bytes: int) -> APIRouter:
    """The /v1/files routes on `files`; uploads are at most `max_file_bytes`."""
    router = APIRouter(prefix=FILES_PATH)

    @router.post(
        "",
        openapi_extra=_UPLOAD_BODY,
        responses=responses(FileObject, errors=(400, 401, 413, 415)),
    )
    async def create_file(request: Request) -> Response:
        max_body = max_file_bytes + FORM_SLACK
        if declared_length(request.scope) > max_body:
            raise FileTooLargeError(max_file_bytes)
        form = await receive_form(
            request.headers.get("content-type", ""),
            _at_most(request.stream(), max_body, max_file_bytes),
            "file",
            lambda: files.begin(max_file_bytes),
            _check_field,
        )
        try:
            purpose = form.fields.get("purpose")
            if purpose is None:
                raise missing_parameter("purpose")
            owner = grant_of(request).key_id
            expires_after = _expires_after(form.fields)
            file = await form.upload.commit(
                owner, form.filename, check_purpose(purpose), expires_after
            )
        finally:
            form.upload.discard()
        return _json(file)

    @router.get(
        "", openapi_extra=_LIST_PARAMETERS, responses=responses(FileList, errors=(400, 401))
    )
    async def list_files(request: Request) -> Response:
        query = request.query_params
        page = await run_in_threadpool(
            files.list,
            grant_of(request).key_id,
            purpose=query.get("purpose"),
            limit=limit_of(query.get("limit"), MAX_LIST_LIMIT),
            after=query.get("after"),
            order=_order(query.get("order")),
        )
        return _json(page)

    @router.get("/{file_id}", responses=responses(FileObject, errors=(401, 404)))
    async def retrieve_file(request: Request, file_id: str) -> Response:
        return _json(files.get(grant_of(request).key_id, file_id))

    @router.get("/{file_id}/content", responses=download_responses(errors=(401, 404)))
    async def download_file(request: Request, file_id: str) -> Response:
        source = files.open_content(grant_of(request).key_id, file_id)
        size = os.fstat(source.fileno()).st_size
        return StreamingResponse(
            _chunks(source),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )

    @router.delete("/{file_id}", responses=responses(DeletedFile, errors=(401, 404)))
    async def delete_file(request: Request, file_id: str) -> Response:
        return _json(await files.delete(grant_of(request).key_id, file_id))

    return router


class _Expiry(BaseModel):
    expires_after: ExpiresAfter


def _expires_after(fields: Mapping[str, str]) -> int | None:
    """The seconds of the form's `expires_after[anchor]` and `expires_after[seconds]` (as the
    OpenAI SDKs send them), checked as a batch's `output_expires_after`; None without them."""
    given = {
        part: fields[f"expires_after[{part}]"]
        for part in ("anchor", "seconds")
        if f"expires_after[{part}]" in fields
    }
    if not given:
        return None
    try:
        return _Expiry.model_validate({"expires_after": given}).expires_after.seconds
    except ValidationError as error:
        raise invalid_request_from_validation(error.errors()) from None


def _check_field(name: str, value: str) -> None:
    """Refuses a bad purpose as soon as its field is read, before the file is."""
    if name == "purpose":
        check_purpose(value)


async def _at_most(
    body: AsyncIterator[bytes], max_body: int, max_file_bytes: int
) -> AsyncIterator[bytes]:
    """`body`, raising FileTooLargeError once more than `max_body` bytes came."""
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > max_body:
            raise FileTooLargeError(max_file_bytes)
        yield chunk


async def _chunks(source: BinaryIO) -> AsyncIterator[bytes]:
    """The bytes of `source`, read on a worker thread, which is closed at the end."""
    try:
        while chunk := await run_in_threadpool(source.read, _CHUNK):
            yield chunk
    finally:
        source.close()


def _order(text: str | None) -> ListOrder:
    if text is None or text == "desc":
        return "desc"
    if text == "asc":
        return "asc"
    raise invalid_value("order", f"must be 'asc' or 'desc', not '{text}'")


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
