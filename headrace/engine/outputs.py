"""What the engine takes per request and what it hands back per step."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal, Protocol

import llguidance

__all__ = [
    "MAX_TOP_LOGPROBS",
    "EngineStats",
    "FinishReason",
    "Grammar",
    "PositionLogprobs",
    "Priority",
    "SamplingParams",
    "TokenLogprob",
    "TokenOutput",
]

# Most alternatives a position's log-probabilities list (OpenAI's top_logprobs allows 20).
MAX_TOP_LOGPROBS = 20

# "stop": an end-of-sequence token, or the request's grammar is complete; "length": max_tokens
# or the context ran out; "abort": the request was aborted, or failed (its grammar rejected a
# token: LLMEngine's output carries the error, AsyncEngine raises it as EngineError).
FinishReason = Literal["stop", "length", "abort"]


class Priority(enum.IntEnum):
    """How urgently a request runs; the scheduler serves lower values first."""

    # Someone is waiting for the answer (chat and completions online): the default.
    INTERACTIVE = 0
    # Nobody is (the Batch API): admitted only when no interactive request waits, prefilled with
    # the token budget interactive ones leave, and preempted before any of them.
    BATCH = 1


class Grammar(Protocol):
    """A compiled grammar generation must follow (headrace.text.grammar.CompiledGrammar)."""

    @property
    def vocab_size(self) -> int:
        """Token ids its masks cover (the tokenizer's, which may differ from the model's)."""
        ...

    def matcher(self) -> llguidance.LLMatcher:
        """A fresh matcher at the grammar's start, for one request."""
        ...


@dataclass(frozen=True)
class SamplingParams:
    # Most tokens to generate; 0 only computes the prompt (to score it: prompt_logprobs).
    max_tokens: int
    # Softmax temperature; 0 means greedy.
    temperature: float = 1.0
    # Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p.
    top_p: float = 1.0
    # Keep only the top_k most likely tokens; 0 keeps them all.
    top_k: int = 0
    # Keep only tokens at least min_p times as likely as the most likely one; 0 keeps them all.
    min_p: float = 0.0
    # Seed of the request's own generator; None draws from the engine's.
    seed: int | None = None
    # Tokens that end the sequence (the model's EOS tokens).
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    # The grammar the output must follow, if any; the request stops once it is complete.
    # Compared and hashed by identity (compilers hand out one object per schema).
    grammar: Grammar | None = None
    # OpenAI's penalties on the tokens generated so far, each token's logit lowered by
    # frequency_penalty times its count plus presence_penalty once it has appeared (-2..2).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # vLLM's (CTRL's) penalty on every token of the prompt and the output: a positive logit
    # divided by it, a negative one multiplied; 1 changes nothing.
    repetition_penalty: float = 1.0
    # (token id, bias) pairs: each bias, -100..100, added to its token's logit.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # Tokens generated before stop_token_ids may end the sequence (they are masked until then).
    min_tokens: int = 0
    # Log-probabilities of each generated token and of that many likeliest alternatives (0 to
    # MAX_TOP_LOGPROBS); None: none. Taken after the grammar's mask, the bias and the penalties,
    # before temperature, top-k, min-p and top-p.
    logprobs: int | None = None
    # The same for every prompt token after the first, from the model's raw logits; None: none.
    # A request that asks for them never takes its prompt from the prefix cache.
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, not {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], not {self.min_tokens}")
        for name in ("logprobs", "prompt_logprobs"):
            count = getattr(self, name)
            if count is not None and not 0 <= count <= MAX_TOP_LOGPROBS:
                raise ValueError(f"{name} must be in [0, {MAX_TOP_LOGPROBS}], not {count}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must not be negative, not {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], not {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in [-2, 2], not {getattr(self, name)}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, not {self.repetition_penalty}")
        if any(not -100 <= bias <= 100 for _, bias in self.logit_bias):
            raise ValueError("logit_bias values must be in [-100, 100]")

    @property
    def adjusts_logits(self) -> bool:
        """Whether a penalty, a bias or min_tokens changes the logits before the token is
        picked."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1
            or self.logit_bias
            or self.min_tokens
        )


@dataclass(frozen=True)
class TokenLogprob:
    # A token id.
    token_id: int
    # Its natural log-probability at the position (at least -9999: never -inf, which JSON lacks).
    logprob: float


@dataclass(frozen=True)
class PositionLogprobs:
    # The token at the position (sampled, or the prompt's) and its log-probability.
    chosen: TokenLogprob
    # The likeliest tokens there, likeliest first, as many as the request asked for.
    top: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class TokenOutput:
    # Tokens generated since the previous output of this request.
    token_ids: list[int]
    # Set on the request's last output.
    finish_reason: FinishReason | None
    # Tokens in the prompt.
    num_prompt_tokens: int
    # Tokens generated so far, these included.
    num_generated_tokens: int
    # Prompt tokens whose keys and values came from the prefix cache.
    num_cached_tokens: int
    # With SamplingParams.logprobs: those of token_ids, one each; else None.
    logprobs: tuple[PositionLogprobs, ...] | None = None
    # With SamplingParams.logprobs, on the last output when a stop token ended the request:
    # that token's (token_ids leave it out); else None.
    stop_logprobs: PositionLogprobs | None = None
    # With SamplingParams.prompt_logprobs, on the request's first output only: those of the
    # prompt's tokens after the first, one each; else None.
    prompt_logprobs: tuple[PositionLogprobs, ...] | None = None
    # Seconds from the request's arrival to its first scheduling, on every output once it has
    # been scheduled; None before (an output of a request aborted while it waited).
    queued_s: float | None = None


@dataclass(frozen=True)
class EngineStats:
    # Requests in the running batch.
    running: int
    # Requests waiting to be admitted.
    waiting: int
    # Fraction of the KV cache's blocks held by requests.
    kv_cache_usage: float = 0.0
    # Requests preempted (their cache freed, to be computed again) since the start.
    num_preemptions: int = 0
    # Of `running`, those at batch priority.
    batch_running: int = 0
    # Of `waiting`, those at batch priority.
    batch_waiting: int = 0
    # Whether the decode step is still being compiled: until it is, steps run eagerly.
    compiling: bool = False
