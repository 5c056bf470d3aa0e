"""The Batch API over HTTP: create, retrieve, list, cancel; the runner does the work.

Each key sees only its own batches (as its own files): another key's batch is a 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from headrace.api.auth import grant_of
from headrace.api.openapi import OpenApiDoc, request_body, responses
from headrace.api.query import limit_of
from headrace.batch import (
    BATCH_ENDPOINTS,
    MAX_BATCH_LIST,
    Batch,
    BatchList,
    BatchStore,
    CreateBatchRequest,
)
from headrace.batch.runner import BatchRunner
from headrace.errors import invalid_value
from headrace.serving import invalid_request_from_validation

__all__ = ["BATCHES_PATH", "batches_router"]

BATCHES_PATH = "/v1/batches"
# OpenAI's metadata limits: pairs, and characters of a key and of a value.
_MAX_PAIRS, _MAX_KEY, _MAX_VALUE = 16, 64, 512
_DEFAULT_LIMIT = 20

_LIST_PARAMETERS: OpenApiDoc = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_BATCH_LIST,
                "default": _DEFAULT_LIMIT,
            },
        },
        {"name": "after", "in": "query", "schema": {"type": "string"}},
    ]
}


def batches_router(batches: BatchStore, runner: BatchRunner) -> APIRouter:
    """The /v1/batches routes on `batches`; `runner` is told of new and cancelled ones."""
    router = APIRouter(prefix=BATCHES_PATH)

    @router.post(
        "",
        openapi_extra=request_body(CreateBatchRequest, _examples()),
        responses=responses(Batch, errors=(400, 401, 404, 413, 415)),
    )
    async def create_batch(request: Request) -> Response:
        create = _parse(await request.body())
        grant = grant_of(request)
        expiry = create.output_expires_after
        batch = await run_in_threadpool(
            batches.create,
            grant.key_id,
            create.input_file_id,
            create.endpoint,
            create.metadata,
            grant.models,
            None if expiry is None else expiry.seconds,
        )
        runner.wake()
        return _json(batch.dump())

    @router.get(
        "", openapi_extra=_LIST_PARAMETERS, responses=responses(BatchList, errors=(400, 401))
    )
    async def list_batches(request: Request) -> Response:
        query = request.query_params
        page = await run_in_threadpool(
            batches.list,
            grant_of(request).key_id,
            limit=limit_of(query.get("limit"), _DEFAULT_LIMIT),
            after=query.get("after"),
        )
        return _json(page.dump())

    @router.get("/{batch_id}", responses=responses(Batch, errors=(401, 404)))
    async def retrieve_batch(request: Request, batch_id: str) -> Response:
        return _json(batches.get(grant_of(request).key_id, batch_id).dump())

    @router.post("/{batch_id}/cancel", responses=responses(Batch, errors=(400, 401, 404)))
    async def cancel_batch(request: Request, batch_id: str) -> Response:
        batch = await run_in_threadpool(batches.cancel, grant_of(request).key_id, batch_id)
        runner.cancel(batch_id)
        return _json(batch.dump())

    return router


def _parse(body: bytes) -> CreateBatchRequest:
    try:
        create = CreateBatchRequest.model_validate_json(body)
    except ValidationError as error:
        raise invalid_request_from_validation(error.errors()) from None
    if create.completion_window != "24h":
        raise invalid_value("completion_window", "only '24h' is supported")
    metadata = create.metadata or {}
    if len(metadata) > _MAX_PAIRS:
        raise invalid_value("metadata", f"at most {_MAX_PAIRS} pairs are allowed")
    for key, value in metadata.items():
        if len(key) > _MAX_KEY or len(value) > _MAX_VALUE:
            raise invalid_value(
                "metadata",
                f"keys may have at most {_MAX_KEY} characters, values {_MAX_VALUE}",
            )
    return create


def _examples() -> dict[str, object]:
    return {
        "chat": {
            "input_file_id": "file-abc123",
            "endpoint": BATCH_ENDPOINTS[0],
            "completion_window": "24h",
        }
    }


def _json(text: str) -> Response:
    return Response(text, media_type="application/json")
