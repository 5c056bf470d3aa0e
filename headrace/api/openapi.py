"""The OpenAPI document at /openapi.json: FastAPI's paths, with the bodies the routes really use.

The routes read raw bodies and write bytes, so FastAPI cannot see their models; the routes name
them through `request_body` and `responses`, and `install_openapi` adds their schemas. All are
made in one pydantic run, so that the request's and the response's ToolCall, which differ, get
distinct names.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from headrace.batch import (
    Batch,
    BatchList,
    CreateBatchRequest,
    DeletedFile,
    FileList,
    FileObject,
)
from headrace.serving import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
)

__all__ = [
    "ErrorResponse",
    "OpenApiDoc",
    "download_responses",
    "install_openapi",
    "request_body",
    "responses",
]

OpenApiDoc = dict[str, Any]

_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    # What went wrong, for a person.
    message: str
    # "invalid_request_error" for client errors, "server_error" for the server's own.
    type: str
    # The request parameter at fault, as a dotted path ("messages.0.role"), or null.
    param: str | None
    # Machine-readable code ("model_not_found", "context_length_exceeded"), or null.
    code: str | None


class ErrorResponse(BaseModel):
    # Every error, whatever its status.
    error: ErrorDetail


# Each model, and whether it is read (a request) or written (a response).
_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (ChatCompletionRequest, "validation"),
    (ChatCompletion, "serialization"),
    (ChatCompletionChunk, "serialization"),
    (CompletionRequest, "validation"),
    (Completion, "serialization"),
    (ModelList, "serialization"),
    (ModelCard, "serialization"),
    (TokenizeRequest, "validation"),
    (TokenizeResponse, "serialization"),
    (DetokenizeRequest, "validation"),
    (DetokenizeResponse, "serialization"),
    (FileObject, "serialization"),
    (FileList, "serialization"),
    (DeletedFile, "serialization"),
    (CreateBatchRequest, "validation"),
    (Batch, "serialization"),
    (BatchList, "serialization"),
    (ErrorResponse, "serialization"),
)

# What each error status means, on the routes that can answer it.
_ERRORS = {
    400: "The request is malformed or asks for what the server cannot do.",
    401: "No API key, or one the server does not accept (only when keys are configured).",
    404: "No such model, or no such file or batch of the key's.",
    413: "The request body (or the uploaded file) is larger than the server accepts.",
    415: "The body is not of the media type the route reads (JSON, or a multipart upload).",
    503: "The engine is overloaded (see Retry-After) or shutting down.",
}


@cache
def _schemas() -> tuple[dict[type[BaseModel], OpenApiDoc], OpenApiDoc]:
    """Each model's `$ref`, and the schemas they refer to, by name."""
    refs, top = models_json_schema(_MODELS, ref_template=_REF)
    return {model: refs[model, mode] for model, mode in _MODELS}, top["$defs"]


def _ref(model: type[BaseModel]) -> OpenApiDoc:
    return _schemas()[0][model]


def request_body(model: type[BaseModel], examples: Mapping[str, object]) -> OpenApiDoc:
    """A route's `openapi_extra` for a JSON body of `model` that the route reads itself."""
    json_body = {
        "schema": _ref(model),
        "examples": {name: {"value": value} for name, value in examples.items()},
    }
    return {"requestBody": {"required": True, "content": {"application/json": json_body}}}


def responses(
    model: type[BaseModel], *, errors: tuple[int, ...], stream: type[BaseModel] | None = None
) -> dict[int | str, OpenApiDoc]:
    """A route's `responses`: `model` as JSON (or `stream`'s events), the error envelopes.

    Any status not listed (405, 500...) also carries the error envelope: that is `default`.
    """
    content = {"application/json": {"schema": _ref(model)}}
    if stream is not None:
        content["text/event-stream"] = {"schema": _event(stream)}
    return _with_errors(content, errors)


def download_responses(*, errors: tuple[int, ...]) -> dict[int | str, OpenApiDoc]:
    """A route's `responses`: bytes as they were stored, the error envelopes."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return _with_errors({"application/octet-stream": binary}, errors)


def _with_errors(content: OpenApiDoc, errors: tuple[int, ...]) -> dict[int | str, OpenApiDoc]:
    error = {"content": {"application/json": {"schema": _ref(ErrorResponse)}}}
    return {
        200: {"description": "Success.", "content": content},
        **{status: {**error, "description": _ERRORS[status]} for status in errors},
        "default": {**error, "description": "Any other error."},
    }


def _event(model: type[BaseModel]) -> OpenApiDoc:
    """One server-sent event: `model` as JSON, an error envelope (the stream ends), or [DONE]."""
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [_ref(model), _ref(ErrorResponse)]},
    }
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}},
    }


def install_openapi(app: FastAPI) -> None:
    """Serve the document with the models' schemas in its components."""

    def openapi() -> OpenApiDoc:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(_schemas()[1])
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
