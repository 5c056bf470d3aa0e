"""OpenAI semantics without HTTP: the wire models, chat and text completions on the engine, the
errors."""

from headrace.serving.chat import ChatService, PreparedChat
from headrace.serving.completions import CompletionService, PreparedCompletion
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
from headrace.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from headrace.serving.responses import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    ModelCard,
    ModelList,
    Usage,
    dump,
)
from headrace.serving.sampling import ModelLimits, Sampling
from headrace.serving.sampling_defaults import SamplingDefaults
from headrace.serving.tokenizer import DetokenizerLike, TokenizerLike

__all__ = [
    "AuthenticationError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatService",
    "Completion",
    "CompletionRequest",
    "CompletionService",
    "ContextLengthExceededError",
    "DetokenizerLike",
    "EngineOverloadedError",
    "HeadraceError",
    "InternalError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelCard",
    "ModelCatalog",
    "ModelLimits",
    "ModelList",
    "ModelNotFoundError",
    "NotFoundError",
    "PreparedChat",
    "PreparedCompletion",
    "RateLimitError",
    "RequestTooLargeError",
    "Sampling",
    "SamplingDefaults",
    "ServiceUnavailableError",
    "TokenizerLike",
    "UnsupportedMediaTypeError",
    "Usage",
    "dump",
    "invalid_request_from_validation",
    "parse_chat_request",
    "parse_completion_request",
]
