"""OpenAI semantics without HTTP: the wire models, chat and text completions on the engine,
and vLLM's tokenize and detokenize."""

from headrace.serving.chat import ChatService, PreparedChat
from headrace.serving.completions import CompletionService, PreparedCompletion
from headrace.serving.models import ModelCatalog
from headrace.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    parse_chat_request,
    parse_completion_request,
    parse_detokenize_request,
    parse_tokenize_request,
)
from headrace.serving.responses import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    TokenizeResponse,
    Usage,
    dump,
)
from headrace.serving.sampling import ModelLimits, Sampling
from headrace.serving.sampling_defaults import SamplingDefaults
from headrace.serving.services import Served, Services
from headrace.serving.tally import ChoiceEnd, Endpoint, Observer, RequestRecord
from headrace.serving.tokenize import TokenizeService
from headrace.serving.tokenizer import DetokenizerLike, TokenizerLike
from headrace.serving.validation import invalid_request_from_validation

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatService",
    "ChoiceEnd",
    "Completion",
    "CompletionRequest",
    "CompletionService",
    "DetokenizeRequest",
    "DetokenizeResponse",
    "DetokenizerLike",
    "Endpoint",
    "ModelCard",
    "ModelCatalog",
    "ModelLimits",
    "ModelList",
    "Observer",
    "PreparedChat",
    "PreparedCompletion",
    "RequestRecord",
    "Sampling",
    "SamplingDefaults",
    "Served",
    "Services",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenizeService",
    "TokenizerLike",
    "Usage",
    "dump",
    "invalid_request_from_validation",
    "parse_chat_request",
    "parse_completion_request",
    "parse_detokenize_request",
    "parse_tokenize_request",
]
