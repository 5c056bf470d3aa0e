"""OpenAI semantics without HTTP: the wire models, chat completions on the engine, the errors."""

from headrace.serving.chat import ChatService, PreparedChat
from headrace.serving.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    EngineOverloadedError,
    HeadraceError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    invalid_request_from_validation,
)
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import ChatCompletionRequest, parse_chat_request
from headrace.serving.responses import (
    ChatCompletion,
    ChatCompletionChunk,
    ModelCard,
    ModelList,
    Usage,
    dump,
)
from headrace.serving.tokenizer import DetokenizerLike, TokenizerLike

__all__ = [
    "AuthenticationError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatService",
    "ContextLengthExceededError",
    "DetokenizerLike",
    "EngineOverloadedError",
    "HeadraceError",
    "InternalError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelCard",
    "ModelCatalog",
    "ModelList",
    "ModelNotFoundError",
    "NotFoundError",
    "PreparedChat",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "TokenizerLike",
    "UnsupportedMediaTypeError",
    "Usage",
    "dump",
    "invalid_request_from_validation",
    "parse_chat_request",
]
