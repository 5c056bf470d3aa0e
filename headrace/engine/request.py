"""A request's state inside the engine, from arrival to its last token."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import llguidance
import torch

from headrace.engine.outputs import FinishReason, PositionLogprobs, Priority, SamplingParams

__all__ = ["Request", "RequestStatus", "isolated"]

logger = logging.getLogger("headrace.engine")

P = ParamSpec("P")
T = TypeVar("T")


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(eq=False)
class Request:
    # The caller's id, unique among live requests.
    request_id: str
    # The prompt's tokens.
    prompt_token_ids: list[int]
    # How to pick tokens and when to stop.
    params: SamplingParams
    # How urgently it runs: batch requests fill the capacity interactive ones leave (Scheduler).
    priority: Priority = Priority.INTERACTIVE
    # Tokens generated so far (end-of-sequence tokens are not appended).
    output_token_ids: list[int] = field(default_factory=list)
    # Tokens whose keys and values are in the cache.
    num_computed_tokens: int = 0
    # Tokens generated, end-of-sequence included.
    num_generated_tokens: int = 0
    # Where the request is in its life.
    status: RequestStatus = RequestStatus.WAITING
    # Why it finished, once it has.
    finish_reason: FinishReason | None = None
    # The KV-cache blocks its tokens sit in, in order, while it runs.
    block_ids: list[int] = field(default_factory=list)
    # Hashes of its full blocks, first to last, as far as they are known (prefix caching).
    block_hashes: list[int] = field(default_factory=list)
    # Leading blocks of block_ids that later requests can find by hash.
    num_hashed_blocks: int = 0
    # Prompt tokens found in the prefix cache when it was first admitted.
    num_cached_tokens: int = 0
    # Times it was preempted: sent back to waiting, its cache freed, to be computed again.
    num_preemptions: int = 0
    # Its own random generator when the request carries a seed.
    generator: torch.Generator | None = None
    # Where its output stands in its grammar, when it has one: which tokens may come next.
    matcher: llguidance.LLMatcher | None = None
    # time.monotonic() when it was added to the engine.
    arrived_at: float = field(default_factory=time.monotonic)
    # time.monotonic() when the scheduler first admitted it; None while it has never run.
    scheduled_at: float | None = None
    # Why the engine failed it, once its part of a step went wrong; it then ends with "abort".
    error: str | None = None
    # A request with the same prompt that it waits for: admitted once the leader's prompt is
    # computed, it finds that prompt in the prefix cache (n samples of one prompt).
    leader: Request | None = None
    # With params.logprobs: those of output_token_ids, one each.
    output_logprobs: list[PositionLogprobs] = field(default_factory=list)
    # With params.logprobs, when a stop token ended it: that token's (it is not an output token).
    stop_logprobs: PositionLogprobs | None = None
    # With params.prompt_logprobs: those of the prompt's tokens after the first, as far as its
    # computed positions go.
    prompt_logprobs: list[PositionLogprobs] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def is_prefilling(self) -> bool:
        """Whether more than its last token is left to compute: a prompt, or all once preempted."""
        return self.num_computed_tokens < self.num_tokens - 1

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Whether prompt log-probabilities are asked for and not all computed yet."""
        wanted = self.params.prompt_logprobs is not None
        return wanted and len(self.prompt_logprobs) < len(self.prompt_token_ids) - 1

    def token_ids(self, start: int, end: int) -> list[int]:
        """The request's tokens (prompt, then output) in [start, end)."""
        prompt_len = len(self.prompt_token_ids)
        if end <= prompt_len:
            return self.prompt_token_ids[start:end]
        return (self.prompt_token_ids + self.output_token_ids)[start:end]


def isolated(
    request: Request, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """`work(*args, **kwargs)`, one request's part of a step, kept from failing the others.

    When it raises, the request is marked failed (its `error` set, the traceback logged) and None
    is returned; the step goes on with the rest of the batch. A request already failed is left
    alone: None, and `work` is not called.
    """
    if request.error is not None:
        return None
    try:
        return work(*args, **kwargs)
    except Exception as exc:
        logger.exception("request %s failed", request.request_id)
        request.error = f"{type(exc).__name__}: {exc}"
        return None
