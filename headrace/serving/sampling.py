"""A request's sampling parameters as the engine takes them: the request's values, else the
model's defaults (--generation-config), else OpenAI's; each checked against the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from headrace.engine.outputs import Grammar, SamplingParams
from headrace.errors import ContextLengthExceededError, InvalidRequestError
from headrace.serving.protocol import ChatCompletionRequest, CompletionRequest
from headrace.serving.sampling_defaults import SamplingDefaults

__all__ = ["ModelLimits", "Sampling"]

_T = TypeVar("_T", int, float)

# What text completions generate when neither the request nor the model says (OpenAI's 16).
_COMPLETION_MAX_TOKENS = 16


@dataclass(frozen=True)
class ModelLimits:
    # Most tokens, prompt and completion together, one sequence may hold.
    max_model_len: int
    # Token ids the model scores: 0 to vocab_size - 1.
    vocab_size: int
    # The tokens that end a sequence unless the request ignores them.
    eos_token_ids: frozenset[int]


class Sampling:
    """Turns requests into SamplingParams for one model."""

    def __init__(self, limits: ModelLimits, defaults: SamplingDefaults) -> None:
        self._limits = limits
        self._defaults = defaults

    def params(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        prompt_tokens: int,
        *,
        grammar: Grammar | None = None,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
    ) -> SamplingParams:
        """The parameters of one sequence of `request`, whose prompt is `prompt_tokens` long.

        Raises InvalidRequestError naming the parameter at fault, ContextLengthExceededError
        when the prompt and the completion do not fit the context.
        """
        defaults = self._defaults
        max_tokens = self._max_tokens(request, prompt_tokens)
        min_tokens = request.min_tokens or 0
        if min_tokens > max_tokens:
            raise InvalidRequestError(
                f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens}).",
                param="min_tokens",
            )
        if min_tokens and grammar is not None:
            raise InvalidRequestError(
                "min_tokens cannot be combined with a response format or forced tool calls.",
                param="min_tokens",
            )
        top_k = _given(request.top_k, defaults.top_k, 0)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=_given(request.temperature, defaults.temperature, 1.0),
            top_p=_given(request.top_p, defaults.top_p, 1.0),
            top_k=max(top_k, 0),
            min_p=_given(request.min_p, defaults.min_p, 0.0),
            seed=request.seed,
            stop_token_ids=self._stop_token_ids(request),
            grammar=grammar,
            presence_penalty=_given(request.presence_penalty, defaults.presence_penalty, 0.0),
            frequency_penalty=_given(request.frequency_penalty, defaults.frequency_penalty, 0.0),
            repetition_penalty=_given(request.repetition_penalty, defaults.repetition_penalty, 1.0),
            logit_bias=self._logit_bias(request.logit_bias or {}),
            min_tokens=min_tokens,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _max_tokens(self, request: ChatCompletionRequest | CompletionRequest, prompt: int) -> int:
        limit, default = self._limits.max_model_len, self._defaults.max_tokens
        wanted: int | None
        if isinstance(request, ChatCompletionRequest):
            what = "messages"
            wanted = request.max_completion_tokens or request.max_tokens or default
        else:
            what = "prompt"
            wanted = _given(request.max_tokens, default, _COMPLETION_MAX_TOKENS)
        if wanted is None:
            if prompt >= limit:
                raise ContextLengthExceededError(
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"{what} resulted in {prompt} tokens. Please reduce the length of the "
                    f"{what}.",
                    param=what,
                )
            return limit - prompt
        if prompt + wanted > limit:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt + wanted} tokens ({prompt} in the {what}, {wanted} in the completion). "
                f"Please reduce the length of the {what} or completion.",
                param=what,
            )
        return wanted

    def _stop_token_ids(self, request: ChatCompletionRequest | CompletionRequest) -> frozenset[int]:
        # The model's end-of-sequence tokens (unless ignore_eos), and the request's own
        eos = frozenset() if request.ignore_eos else self._limits.eos_token_ids
        asked = (self.token_id(t, "stop_token_ids", t) for t in request.stop_token_ids or ())
        return eos | frozenset(asked)

    def _logit_bias(self, biases: dict[str, float]) -> tuple[tuple[int, float], ...]:
        # -> (token id, bias) pairs; the keys are ids written as strings, as JSON keys are
        return tuple(
            (self.token_id(int(key) if key.isdecimal() else -1, "logit_bias", key), bias)
            for key, bias in biases.items()
        )

    def token_id(self, token: int, param: str, given: object) -> int:
        """`token`, checked to be an id of the model's vocabulary; `given`: as the request
        wrote it."""
        vocab = self._limits.vocab_size
        if not 0 <= token < vocab:
            raise InvalidRequestError(
                f"{param} takes token ids from 0 to {vocab - 1}, not {given!r}.", param=param
            )
        return token


def _given(asked: _T | None, default: _T | None, otherwise: _T) -> _T:
    """The request's value, else the model's default, else the usual one."""
    if asked is not None:
        return asked
    return otherwise if default is None else default
