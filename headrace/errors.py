"""The one error hierarchy: every failure a client can be told about, in OpenAI's terms.

Each error carries its OpenAI envelope, `{"error": {message, type, param, code}}`, and what a
client should make of it (wait, retry, use another method); it knows nothing of HTTP.
`headrace.api.errors` maps each kind to its status and headers, in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AuthenticationError",
    "ContextLengthExceededError",
    "EngineOverloadedError",
    "FileTooLargeError",
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
    "invalid_value",
    "missing_parameter",
]


class HeadraceError(Exception):
    """An error a client is told about: OpenAI's envelope and advice on trying again."""

    # OpenAI's error type: "invalid_request_error", "server_error", ...
    type: str = "server_error"
    # Machine-readable code ("model_not_found", ...), or None.
    code: str | None = None
    # The request parameter at fault, as a dotted path ("messages.0.role"), or None.
    param: str | None = None
    # Seconds the client should wait before it tries again, or None: no advice.
    retry_after: float | None = None
    # Whether the same request may succeed if sent again; None: the client decides.
    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        # What went wrong, for a person.
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after
        if should_retry is not None:
            self.should_retry = should_retry

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

    type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    """Prompt and completion together do not fit the model's context."""

    code = "context_length_exceeded"
    param = "messages"


class AuthenticationError(HeadraceError):
    """No API key, or not one we accept."""

    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(HeadraceError):
    """No such route or object."""

    type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    """The request names a model we do not serve."""

    code = "model_not_found"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.")


class MethodNotAllowedError(HeadraceError):
    """The route exists, but not for this method."""

    type = "invalid_request_error"

    def __init__(self, message: str, *, allowed: Iterable[str] = ()) -> None:
        super().__init__(message)
        # The methods the route does take ("GET", "POST"), in the order it lists them.
        self.allowed = tuple(allowed)


class RateLimitError(HeadraceError):
    """A key has used up its requests or tokens per minute.

    Its `type` names the limit, "requests" or "tokens", as OpenAI's does.
    """

    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, should_retry=should_retry)
        self.type = limit


class RequestTooLargeError(HeadraceError):
    """The request body is larger than the server accepts."""

    type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is too large: the limit is {limit} bytes.")


class FileTooLargeError(RequestTooLargeError):
    """An uploaded file is larger than the server keeps."""

    code = "file_too_large"
    param = "file"

    def __init__(self, limit: int) -> None:
        HeadraceError.__init__(self, f"The file is too large: the limit is {limit} bytes.")


class UnsupportedMediaTypeError(HeadraceError):
    """The body comes with a Content-Type other than the one the method reads."""

    type = "invalid_request_error"
    code = "unsupported_content_type"

    def __init__(self, content_type: str, accepted: str = "application/json") -> None:
        super().__init__(
            f"Unsupported content type: '{content_type}'. This API method only accepts "
            f"'{accepted}' requests."
        )


class ServiceUnavailableError(HeadraceError):
    """The engine cannot take or finish the request right now."""

    code = "service_unavailable"


class EngineOverloadedError(ServiceUnavailableError):
    """Too many requests already wait for the engine; the client should come back shortly."""

    code = "engine_overloaded"

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "The engine is currently overloaded, please try again later.",
            retry_after=retry_after,
        )


class InternalError(HeadraceError):
    """A bug or an engine failure; details go to the log, never to the client."""

    def __init__(
        self, message: str = "The server had an error while processing your request."
    ) -> None:
        super().__init__(message)


def missing_parameter(param: str) -> InvalidRequestError:
    """The error for a required parameter that is absent; `param` is its dotted path."""
    return InvalidRequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def invalid_value(param: str, reason: str, *, code: str | None = None) -> InvalidRequestError:
    """The error for a parameter whose value is wrong, and why; `param` is its dotted path."""
    return InvalidRequestError(f"Invalid value for '{param}': {reason}.", param=param, code=code)
