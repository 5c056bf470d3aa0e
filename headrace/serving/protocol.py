"""The OpenAI wire format of requests, as pydantic models.

Requests: an unknown top-level field is refused as OpenAI refuses it ("Unrecognized request
argument supplied: NAME", a 400), where vLLM ignores it: a parameter that cannot act is never
silently dropped. OpenAI's own parameters that headrace cannot honour are refused with the
reason (`UNSUPPORTED`), unless null. Nested objects ignore unknown fields (a message's other
keys reach the chat template). Parameters accepted without effect say why in their comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headrace.errors import InvalidRequestError
from headrace.serving.validation import invalid_request_from_validation

__all__ = [
    "AllowedTools",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ContentPart",
    "DetokenizeRequest",
    "FunctionCall",
    "FunctionDefinition",
    "FunctionName",
    "FunctionReference",
    "JsonSchemaFormat",
    "ResponseFormat",
    "StreamOptions",
    "TokenizeRequest",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "check_known_fields",
    "parse_chat_request",
    "parse_completion_request",
    "parse_detokenize_request",
    "parse_tokenize_request",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
# What OpenAI allows as a function or response format name (lengths are checked apart).
_NAME = r"^[a-zA-Z0-9_-]+$"


class _Request(BaseModel):
    # Types as JSON has them, as OpenAI checks them: "10" is not an integer, 1 is not true;
    # NaN and Infinity, which some JSON writers emit, are no numbers.
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


_R = TypeVar("_R", bound=_Request)


class ContentPart(_Request):
    # Only "text" parts are supported; anything else is refused with a 400.
    type: Literal["text"]
    # The part's text.
    text: str


class FunctionCall(_Request):
    # Name of the function the assistant called.
    name: str
    # Its arguments, a JSON document as text.
    arguments: str


class ToolCall(_Request):
    # Id the tool's answer refers back to (`tool_call_id`).
    id: str
    # Always "function".
    type: Literal["function"] = "function"
    # The call itself.
    function: FunctionCall


class ChatMessage(_Request):
    # Who speaks.
    role: Role
    # The text, or a list of text parts; may be null only for an assistant that called tools.
    content: str | list[ContentPart] | None = None
    # Optional participant name.
    name: str | None = None
    # Calls an earlier assistant turn made.
    tool_calls: list[ToolCall] | None = None
    # On a tool message: the call it answers.
    tool_call_id: str | None = None


class StreamOptions(_Request):
    # Send one extra chunk with the usage before [DONE], and `"usage": null` on all others.
    include_usage: bool | None = None
    # vLLM's extension: with include_usage, every chunk carries the usage so far instead.
    continuous_usage_stats: bool | None = None


class FunctionDefinition(_Request):
    # Name the model calls the function by: 1-64 of [a-zA-Z0-9_-], unique among `tools`.
    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    # What it does, for the model.
    description: str | None = None
    # JSON Schema of its arguments; absent: it takes none.
    parameters: dict[str, Any] | None = None
    # Whether arguments must follow the schema exactly.
    strict: bool | None = None


class Tool(_Request):
    # Always "function".
    type: Literal["function"]
    # The function offered.
    function: FunctionDefinition


class FunctionName(_Request):
    # Name of one of the request's `tools`.
    name: str


class FunctionReference(_Request):
    # Always "function".
    type: Literal["function"]
    # Which function.
    function: FunctionName


class AllowedTools(_Request):
    # "auto": the model may call one of `tools` or answer; "required": it must call one.
    mode: Literal["auto", "required"]
    # The functions it may call; the prompt still offers all of the request's `tools`.
    tools: list[FunctionReference] = Field(min_length=1)


class ToolChoice(_Request):
    # "function": the model must call `function`; "allowed_tools": see `allowed_tools`.
    type: Literal["function", "allowed_tools"]
    # For "function" (required there): the function to call.
    function: FunctionName | None = None
    # For "allowed_tools" (required there): which functions, and whether a call is required.
    allowed_tools: AllowedTools | None = None


class JsonSchemaFormat(_Request):
    # Name of the format: 1-64 of [a-zA-Z0-9_-].
    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    # What the format is for, for the model.
    description: str | None = None
    # JSON Schema the answer must match; absent: any JSON object. ("schema" on the wire.)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    # Whether the answer must follow the schema exactly.
    strict: bool | None = None


class StructuredOutputs(_Request):
    """vLLM's structured_outputs: the answer follows exactly one of these."""

    # vLLM's other options (json_object, structural_tag, whitespace_pattern, ...) are refused.
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")

    # JSON valid against this JSON Schema. ("json" on the wire.)
    json_: dict[str, Any] | None = Field(default=None, alias="json")
    # A regular expression the whole answer matches.
    regex: str | None = None
    # One of these strings, exactly.
    choice: list[str] | None = Field(default=None, min_length=1, max_length=1024)
    # A grammar in Lark's syntax, llguidance's dialect (vLLM's guidance backend takes it too).
    grammar: str | None = None


class ResponseFormat(_Request):
    # "text", "json_object" or "json_schema".
    type: Literal["text", "json_object", "json_schema"]
    # For "json_schema" (required there): the schema and its name.
    json_schema: JsonSchemaFormat | None = None


class _SamplingRequest(_Request):
    """What chat and text completions ask of sampling alike."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    # Which served model to use; echoed back in the response.
    model: str
    # Answer as server-sent events.
    stream: bool | None = None
    # Streaming options; only allowed with `stream`.
    stream_options: StreamOptions | None = None
    # Most tokens to generate.
    max_tokens: int | None = Field(default=None, ge=1)
    # Sampling temperature; 0 is greedy. Default: the model's (--generation-config), else 1.
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Nucleus sampling mass. Default: the model's, else 1.
    top_p: float | None = Field(default=None, gt=0, le=1)
    # vLLM's extension: sample among the top_k most likely tokens; 0 or -1: all. Default: the
    # model's, else all.
    top_k: int | None = Field(default=None, ge=-1)
    # vLLM's extension: drop tokens less than min_p times as likely as the likeliest. Default:
    # the model's, else 0.
    min_p: float | None = Field(default=None, ge=0, le=1)
    # How many choices to sample (for each prompt); the prompt is computed once. Default 1.
    n: int | None = Field(default=None, ge=1, le=128)
    # Seed for reproducible sampling; a 64-bit signed integer, as OpenAI's. Choice i samples
    # with seed + i.
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    # vLLM's extension: generate through end-of-sequence tokens (fixed-length benchmarks).
    ignore_eos: bool = False
    # vLLM's extension: more token ids that end the completion, as end-of-sequence does (not
    # part of the output); they apply with ignore_eos too.
    stop_token_ids: list[int] | None = Field(default=None, max_length=1024)
    # Up to 4 strings that end the completion; not part of the returned text unless
    # include_stop_str_in_output.
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    # vLLM's extension: the text ends with the stop string that ended it. Default false.
    include_stop_str_in_output: bool = False
    # vLLM's extension: end-of-sequence and stop_token_ids cannot end the completion before
    # this many tokens. Default 0.
    min_tokens: int | None = Field(default=None, ge=0)
    # Lowers the logit of every token generated so far, once (OpenAI's formula). Default: the
    # model's, else 0.
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Lowers the logit of every token generated so far, per time it appeared. Default: the
    # model's, else 0.
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # vLLM's extension: divides positive logits and multiplies negative ones of every token of
    # the prompt and the output. Default: the model's, else 1 (none).
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    # Token id (a string, as JSON keys are) -> a bias of -100..100 added to its logit.
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # End-user id; accepted and ignored.
    user: str | None = None

    # OpenAI's parameters of the endpoint that headrace cannot honour, and why: one given a
    # value other than null is refused with that reason; any other unknown field is refused
    # as OpenAI refuses it ("Unrecognized request argument supplied").
    UNSUPPORTED: ClassVar[Mapping[str, str]] = {}


class ChatCompletionRequest(_SamplingRequest):
    UNSUPPORTED: ClassVar[Mapping[str, str]] = {
        "audio": "audio output is not supported",
        "prediction": "predicted outputs are not supported",
        "reasoning_effort": "the models served here do not reason apart from their answer",
        "verbosity": "the models served here take no verbosity setting",
        "web_search_options": "web search is not supported",
        "moderation": "moderation is not supported",
        "prompt_cache_options": "the prompt cache takes no options",
    }

    # The conversation so far; at most 2048 messages, as OpenAI allows.
    messages: list[ChatMessage] = Field(min_length=1, max_length=2048)
    # Most tokens to generate; wins over max_tokens (which OpenAI deprecated for it).
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # Functions the model may call, at most 128 as OpenAI allows (checked by
    # `headrace.serving.tools.prepare_tools`).
    tools: list[Tool] | None = Field(default=None, max_length=128)
    # "none", "auto", "required", a named function or allowed tools; needs `tools`.
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    # Whether the model may call several tools in one answer. Default true.
    parallel_tool_calls: bool | None = None
    # Text, any JSON object, or JSON matching a schema (`tools.prepare_response_format`).
    response_format: ResponseFormat | None = None
    # Deprecated by OpenAI in favour of `tools`; refused with a pointer to it.
    functions: Any = None
    # Deprecated by OpenAI in favour of `tool_choice`; refused with a pointer to it.
    function_call: Any = None
    # Whether each choice carries the log-probabilities of its tokens.
    logprobs: bool | None = None
    # With logprobs: how many of the likeliest tokens each position lists too (0-20).
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # What the reply may hold: text only ("audio" is refused).
    modalities: list[Literal["text", "audio"]] | None = None
    # Stored completions: none are kept here, so only false or null.
    store: bool | None = None
    # Tags for a stored completion: of no use without `store`, as at OpenAI; at most 16 pairs.
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    # A hint grouping requests for the prompt cache; the prefix cache finds shared prefixes by
    # their content for every request, so it has nothing to add.
    prompt_cache_key: str | None = None
    # How long cached prompts are kept: only "in_memory" (the prefix cache's blocks, while free
    # memory lasts).
    prompt_cache_retention: Literal["in_memory"] | None = None
    # An end-user id for abuse detection, as `user`: accepted and ignored.
    safety_identifier: str | None = None
    # Processing tier: one here, "auto" or "default".
    service_tier: Literal["auto", "default"] | None = None
    # vLLM's extension: end the prompt with the header of the assistant's reply. Default true,
    # false when continue_final_message.
    add_generation_prompt: bool | None = None
    # vLLM's extension: the model goes on writing the final message (a reply the client
    # began), its end-of-turn left out. Default false.
    continue_final_message: bool | None = None
    # vLLM's extension: more variables for the chat template (Qwen3's enable_thinking, say).
    chat_template_kwargs: dict[str, Any] | None = Field(default=None, max_length=64)
    # vLLM's extension: the answer follows a JSON schema, a regex, a choice or a grammar.
    structured_outputs: StructuredOutputs | None = None


# A prompt of text completions: a text, texts, token ids, or lists of token ids.
Prompt = str | Annotated[list[str], Field(min_length=1)] | list[int] | list[list[int]]


class CompletionRequest(_SamplingRequest):
    # The prompt(s): each is completed on its own, n times, its choices in prompt order.
    prompt: Prompt
    # Most tokens to generate; 0 with echo and logprobs scores the prompt. Default: the
    # model's (--generation-config), else 16 as OpenAI's.
    max_tokens: int | None = Field(default=None, ge=0)
    # Put the prompt before each completion's text (and its log-probabilities, if asked for).
    echo: bool | None = None
    # Log-probabilities of each token and of this many of the likeliest ones there (0-5).
    logprobs: int | None = Field(default=None, ge=0, le=5)
    # Text after the completion (insertion); not supported: only null is accepted.
    suffix: str | None = None
    # Sample this many and return the n best; only best_of equal to n is accepted.
    best_of: int | None = Field(default=None, ge=1, le=128)


class TokenizeRequest(_Request):
    """vLLM's /tokenize: a text prompt, or a conversation as the chat template renders it."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    # A served model's name; optional, as the one model is meant.
    model: str | None = None
    # A text, tokenized as /v1/completions tokenizes it; or else `messages`.
    prompt: str | None = None
    # A conversation, rendered as /v1/chat/completions renders it.
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=2048)
    # With `prompt`: frame it with the special tokens the tokenizer adds (BOS, for some).
    # Default true, as vLLM's; a chat's special tokens come from its template.
    add_special_tokens: bool | None = None
    # With `messages`: end with the header of the assistant's reply, or inside the final
    # message, and more variables for the template; as a chat's.
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(default=None, max_length=64)
    # With `messages`: the tools offered, rendered into the prompt as a chat's are.
    tools: list[Tool] | None = Field(default=None, max_length=128)
    # Also answer each token's string in the vocabulary (`token_strs`). Default false.
    return_token_strs: bool | None = None


class DetokenizeRequest(_Request):
    """vLLM's /detokenize: token ids back to text."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    # A served model's name; optional.
    model: str | None = None
    # Ids of the model's vocabulary.
    tokens: list[int] = Field(max_length=1_000_000)


def check_known_fields(extra: Mapping[str, Any] | None, unsupported: Mapping[str, str]) -> None:
    """Refuses a request's unknown fields (`extra`), as OpenAI does; a field of `unsupported`,
    one headrace knows it cannot honour, is refused with its reason unless it is null."""
    for name, value in (extra or {}).items():
        reason = unsupported.get(name)
        if reason is None:
            raise InvalidRequestError(f"Unrecognized request argument supplied: {name}", param=name)
        if value is not None:
            raise InvalidRequestError(f"'{name}' is not supported: {reason}.", param=name)


def parse_tokenize_request(body: bytes) -> TokenizeRequest:
    """The request in `body`; raises InvalidRequestError for bad JSON or bad parameters."""
    request = _parse(TokenizeRequest, body)
    check_known_fields(request.model_extra, {})
    return request


def parse_detokenize_request(body: bytes) -> DetokenizeRequest:
    """The request in `body`; raises InvalidRequestError for bad JSON or bad parameters."""
    request = _parse(DetokenizeRequest, body)
    check_known_fields(request.model_extra, {})
    return request


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """The request in `body`; raises InvalidRequestError for bad JSON or bad parameters."""
    return _parse(ChatCompletionRequest, body)


def parse_completion_request(body: bytes) -> CompletionRequest:
    """The request in `body`; raises InvalidRequestError for bad JSON or bad parameters."""
    return _parse(CompletionRequest, body)


def _parse(kind: type[_R], body: bytes) -> _R:
    try:
        return kind.model_validate_json(body)
    except ValidationError as error:
        raise invalid_request_from_validation(error.errors(include_url=False)) from None
