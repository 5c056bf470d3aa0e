"""The OpenAI wire format of responses, as pydantic models.

Responses are serialized by `dump`, which leaves out every field that was not given when the
model was built: a field that is always on the wire has no default; an optional one (a chunk's
`usage`, a delta's `role`) is on the wire, even as null, exactly when it was given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatLogprobs",
    "Choice",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionLogprobs",
    "Delta",
    "DetokenizeResponse",
    "FinishReason",
    "FunctionCall",
    "FunctionCallDelta",
    "ModelCard",
    "ModelList",
    "PromptTokensDetails",
    "TokenLogprob",
    "TokenizeResponse",
    "ToolCall",
    "ToolCallDelta",
    "TopLogprob",
    "Usage",
    "dump",
]

FinishReason = Literal["stop", "length", "tool_calls"]


# Characters JSON may carry raw that str.splitlines() takes for line ends, as do line readers
# built on it (httpx's aiter_lines among them): escaped, an SSE event stays one line for them.
_LINE_ENDS = {"\u0085": b"\\u0085", "\u2028": b"\\u2028", "\u2029": b"\\u2029"}


def dump(model: BaseModel) -> bytes:
    """JSON of a response object: exactly the fields given when it was built."""
    text = model.model_dump_json(exclude_unset=True).encode()
    for character, escaped in _LINE_ENDS.items():
        text = text.replace(character.encode(), escaped)
    return text


class PromptTokensDetails(BaseModel):
    # Prompt tokens whose keys and values came from the prefix cache.
    cached_tokens: int


class Usage(BaseModel):
    # Tokens in the rendered prompt.
    prompt_tokens: int
    # Tokens generated.
    completion_tokens: int
    # The two together.
    total_tokens: int
    # Where the prompt's tokens came from.
    prompt_tokens_details: PromptTokensDetails


class FunctionCall(BaseModel):
    # The function the model called.
    name: str
    # Its arguments: a JSON object's text, as the model generated it.
    arguments: str


class ToolCall(BaseModel):
    # "call_<hex>": what the client's tool message answers with tool_call_id.
    id: str
    # Always "function".
    type: Literal["function"]
    # The call.
    function: FunctionCall


class AssistantMessage(BaseModel):
    # Always "assistant".
    role: Literal["assistant"]
    # The generated text; null when the model only called tools.
    content: str | None
    # Always null: we never refuse.
    refusal: None
    # Given only when the model called tools.
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    # The token's text; bytes that are not whole characters are written as \xNN escapes.
    token: str
    # Its natural log-probability at the position (-9999 at the lowest).
    logprob: float
    # Its UTF-8 bytes, which join with the neighbours' into whole characters.
    bytes: list[int]


class TokenLogprob(TopLogprob):
    # The likeliest tokens at the position, likeliest first, as many as top_logprobs asked.
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    # One entry per token of the content (and of tool calls), in order.
    content: list[TokenLogprob] | None
    # Always null: we never refuse.
    refusal: None


class Choice(BaseModel):
    # Position in `choices`: 0 to n - 1.
    index: int
    # The answer.
    message: AssistantMessage
    # Why generation ended.
    finish_reason: FinishReason
    # With the request's logprobs: those of the answer's tokens; else null.
    logprobs: ChatLogprobs | None


class ChatCompletion(BaseModel):
    # "chatcmpl-<hex>".
    id: str
    # Always "chat.completion".
    object: Literal["chat.completion"]
    # Unix seconds when the request was accepted.
    created: int
    # The model name the client asked for.
    model: str
    # The choices, by index.
    choices: list[Choice]
    # Token counts.
    usage: Usage


class FunctionCallDelta(BaseModel):
    # The function's name, on the call's first delta only.
    name: str | None = None
    # The next fragment of the arguments' JSON text ("" on the first delta).
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    # Which call of the reply this fragment belongs to: 0, 1, 2...
    index: int
    # "call_<hex>", on the call's first delta only.
    id: str | None = None
    # "function", on the call's first delta only.
    type: Literal["function"] | None = None
    # The name (first delta) or an arguments fragment (later deltas).
    function: FunctionCallDelta


class Delta(BaseModel):
    # "assistant" on the first chunk only.
    role: Literal["assistant"] | None = None
    # New text; absent on the last choice chunk.
    content: str | None = None
    # New tool-call pieces, when the model calls tools.
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    # Which choice the chunk continues: 0 to n - 1.
    index: int
    # What is new since the previous chunk.
    delta: Delta
    # Null until the choice's last chunk.
    finish_reason: FinishReason | None
    # With the request's logprobs: those of the tokens of this chunk; else null.
    logprobs: ChatLogprobs | None


class ChatCompletionChunk(BaseModel):
    # Shared by every chunk of the stream.
    id: str
    # Always "chat.completion.chunk".
    object: Literal["chat.completion.chunk"]
    # Shared by every chunk of the stream.
    created: int
    # The model name the client asked for.
    model: str
    # One choice, or none on the usage chunk.
    choices: list[ChunkChoice]
    # Given only with stream_options.include_usage: null, then the counts on the last chunk
    # (with continuous_usage_stats: the counts so far on every chunk).
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    # Each token's text; bytes that are not whole characters are written as \xNN escapes.
    tokens: list[str]
    # Each token's log-probability; null for the first token of an echoed prompt.
    token_logprobs: list[float | None]
    # The likeliest tokens at each position, text -> log-probability; null where the first.
    top_logprobs: list[dict[str, float] | None]
    # Where each token's text begins in the choice's text, in characters.
    text_offset: list[int]


class CompletionChoice(BaseModel):
    # Which choice: prompt's index * n + sample's index.
    index: int
    # The completion (after the prompt, with echo); in a stream, what is new.
    text: str
    # With the request's logprobs: those of the text's tokens; else null.
    logprobs: CompletionLogprobs | None
    # Why generation ended; null in a stream until the choice's last chunk.
    finish_reason: FinishReason | None


class Completion(BaseModel):
    # "cmpl-<hex>", shared by every chunk of a stream.
    id: str
    # Always "text_completion", whole or streamed.
    object: Literal["text_completion"]
    # Unix seconds when the request was accepted.
    created: int
    # The model name the client asked for.
    model: str
    # The choices (whole), or one choice (a chunk), or none (the usage chunk).
    choices: list[CompletionChoice]
    # Token counts: always whole; in a stream, as ChatCompletionChunk's usage.
    usage: Usage | None = None


class ModelCard(BaseModel):
    # The name clients use.
    id: str
    # Always "model".
    object: Literal["model"]
    # Unix seconds when the server started serving it.
    created: int
    # Always "headrace".
    owned_by: str


class ModelList(BaseModel):
    # Always "list".
    object: Literal["list"]
    # One card per served name.
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    """vLLM's /tokenize answer."""

    # How many tokens.
    count: int
    # The most tokens a prompt and its completion may hold together.
    max_model_len: int
    # The token ids.
    tokens: list[int]
    # Each token's string in the vocabulary (byte-level BPE's "Ġ" for a space included), when
    # `return_token_strs` asked for them; else null, as vLLM's.
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    """vLLM's /detokenize answer."""

    # The text of the tokens, special tokens included, as vLLM's.
    prompt: str
