"""The one error hierarchy: every failure a client can be told about, in OpenAI's terms.

Each error knows its HTTP status and its OpenAI envelope, `{"error": {message, type, param,
code}}`; `headrace.api` turns them into responses in exactly one place and never invents its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "ContextLengthExceededError",
    "EngineOverloadedError",
    "HeadraceError",
    "InternalError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NotFoundError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "invalid_request_from_validation",
    "invalid_value",
    "missing_parameter",
]


class HeadraceError(Exception):
    """An error with an HTTP status and an OpenAI error envelope."""

    # HTTP status of the response.
    status: int = 500
    # OpenAI's error type: "invalid_request_error", "server_error", ...
    type: str = "server_error"
    # Machine-readable code ("model_not_found", ...), or None.
    code: str | None = None
    # The request parameter at fault, as a dotted path ("messages.0.role"), or None.
    param: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        # What went wrong, for a person.
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        # Extra response headers (Allow on 405, Retry-After on 429/503).
        self.headers: Mapping[str, str] = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error envelope."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(HeadraceError):
    """The request is malformed or asks for something we do not do."""

    status = 400
    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt and completion together do not fit the model's context."""

    code = "context_length_exceeded"
    param = "messages"


class AuthenticationError(HeadraceError):
    """No API key, or not one we accept."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(HeadraceError):
    """No such route or object."""

    status = 404
    type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    """The request names a model we do not serve."""

    code = "model_not_found"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")


class MethodNotAllowedError(HeadraceError):
    """The route exists, but not for this HTTP method."""

    status = 405
    type = "invalid_request_error"


class RateLimitError(HeadraceError):
    """A key has used up its requests or tokens per minute.

    Its `type` names the limit, "requests" or "tokens", as OpenAI's does.
    """

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, headers: Mapping[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.type = limit


class RequestTooLargeError(HeadraceError):
    """The request body is larger than the server accepts."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is too large: the limit is {limit} bytes.")


class UnsupportedMediaTypeError(HeadraceError):
    """The body comes with a Content-Type other than JSON."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_type"

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Unsupported content type: '{content_type}'. This API method only accepts "
            "'application/json' requests."
        )


class ServiceUnavailableError(HeadraceError):
    """The engine cannot take or finish the request right now."""

    status = 503
    code = "service_unavailable"


class EngineOverloadedError(ServiceUnavailableError):
    """Too many requests already wait for the engine; the client should come back shortly."""

    code = "engine_overloaded"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "The engine is currently overloaded, please try again later.",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class InternalError(HeadraceError):
    """A bug or an engine failure; details go to the log, never to the client."""

    def __init__(
        self, message: str = "The server had an error while processing your request."
    ) -> None:
        super().__init__(message)


# Pydantic names the union member it tried inside `loc` ("str", "list[TextPart]",
# "function-after[...]", model class names); request fields are snake_case identifiers.
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_field(part: int | str) -> bool:
    return isinstance(part, int) or (_FIELD.fullmatch(part) is not None and part not in _TYPE_NAMES)


def _path(loc: Iterable[int | str]) -> tuple[int | str, ...]:
    return tuple(part for part in loc if _is_field(part))


# OpenAI's error codes for the checks pydantic makes, by pydantic's error type.
_CODES = {
    "int_from_float": "invalid_type",
    "literal_error": "invalid_value",
    "string_pattern_mismatch": "invalid_value",
    "too_short": "array_below_min_length",
    "too_long": "array_above_max_length",
    "string_too_short": "string_below_min_length",
    "string_too_long": "string_above_max_length",
}
# Lengths below the minimum, when the value is empty.
_EMPTY = {"too_short": "empty_array", "string_too_short": "empty_string"}
# Bounds, and the side of them the value fell on.
_BOUNDS = {
    "greater_than": "below_min_value",
    "greater_than_equal": "below_min_value",
    "less_than": "above_max_value",
    "less_than_equal": "above_max_value",
}


def _code(error: Mapping[str, Any]) -> str | None:
    """OpenAI's code for a pydantic error: "invalid_type", "integer_above_max_value"..."""
    kind = error["type"]
    if kind.endswith("_type"):
        return "invalid_type"
    if kind in _EMPTY and not error["input"]:
        return _EMPTY[kind]
    if kind in _BOUNDS:
        # pydantic gives the bound the field's type, which tells integers from decimals.
        (bound,) = error["ctx"].values()
        return f"{'decimal' if isinstance(bound, float) else 'integer'}_{_BOUNDS[kind]}"
    return _CODES.get(kind)


def invalid_request_from_validation(errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """One clear 400 from pydantic's error list (`ValidationError.errors()`).

    Reports the first failing parameter. When it failed every member of a union, the member
    that got furthest names the problem (a list of parts with a bad part beats "not a string").
    """
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request "
            f"({first['ctx']['error']}). The API expects a JSON object."
        )
    if kind == "model_type" and not first["loc"]:
        return InvalidRequestError("The request body must be a JSON object.")
    prefix = _path(first["loc"])
    related = [error for error in errors if _path(error["loc"])[: len(prefix)] == prefix]
    deepest = max(related, key=lambda error: len(_path(error["loc"])))
    path = _path(deepest["loc"])
    if not path:
        return InvalidRequestError(f"Invalid request: {deepest['msg']}.")
    param = ".".join(str(part) for part in path)
    if deepest["type"] == "missing":
        return missing_parameter(param)
    at_path = [error for error in related if _path(error["loc"]) == path]
    # A union member of the right type that failed a finer check says more than the others.
    fitting = [error for error in at_path if _code(error) != "invalid_type"] or at_path
    reasons = dict.fromkeys(error["msg"] for error in fitting)
    return invalid_value(param, "; or ".join(reasons), code=_code(fitting[0]))


def missing_parameter(param: str) -> InvalidRequestError:
    """The 400 for a required parameter that is absent; `param` is its dotted path."""
    return InvalidRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_value(param: str, reason: str, *, code: str | None = None) -> InvalidRequestError:
    """The 400 for a parameter whose value is wrong, and why; `param` is its dotted path."""
    return InvalidRequestError(f"Invalid value for '{param}': {reason}.", param=param, code=code)
