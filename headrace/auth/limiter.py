"""Requests and tokens per minute, per key: token buckets on a clock the caller may replace.

A key's batch requests spend its tokens per minute from a bucket of their own, so that its
batches never use up what its interactive requests may spend, nor the other way round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from headrace.errors import RateLimitError

__all__ = ["REPORTED_LIMITS", "Clock", "LimitName", "LimitStatus", "Limits", "RateLimiter"]

# Seconds from some fixed point; time.monotonic by default.
Clock = Callable[[], float]
# What a limit counts, and the `type` of the error when it is reached.
LimitName = Literal["requests", "tokens", "batch_tokens"]

# A bucket refills its whole capacity in this many seconds.
_PERIOD = 60.0
# The limits reported to interactive clients (the x-ratelimit-* headers).
REPORTED_LIMITS: tuple[LimitName, ...] = ("requests", "tokens")


@dataclass(frozen=True)
class Limits:
    # Requests a key may make per minute; None means no limit.
    requests: int | None = None
    # Tokens a key may ask for per minute (prompt + max_tokens); None means no limit.
    tokens: int | None = None

    def __post_init__(self) -> None:
        for name, limit in (("requests", self.requests), ("tokens", self.tokens)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} per minute must be positive, not {limit}")

    def of(self, name: LimitName) -> int | None:
        """The limit per minute of `name`; batch tokens have the tokens' limit."""
        return self.requests if name == "requests" else self.tokens


@dataclass(frozen=True)
class LimitStatus:
    # What the limit counts.
    name: LimitName
    # How many per minute.
    limit: int
    # How many may be used right now.
    remaining: int
    # Seconds until the limit is whole again.
    reset: float


@dataclass
class _Bucket:
    # The most it holds, and what it starts with: the limit per minute.
    capacity: int
    # What it holds now, as of `updated`.
    level: float
    # The clock's reading when `level` was last brought up to date.
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.capacity / _PERIOD)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, level - self.level) * _PERIOD / self.capacity


class RateLimiter:
    """One token bucket per key and limit: full at first, refilled evenly over a minute.

    A request takes 1 from its key's requests bucket and its token budget from the tokens
    bucket, or is refused, taking nothing, with the time to wait until it would fit.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        # Buckets by key id and limit name, made on first use.
        self._buckets: dict[tuple[str, LimitName], _Bucket] = {}

    def take(self, key_id: str, limits: Limits, name: LimitName, amount: int) -> None:
        """Takes `amount` from the key's `name` bucket; raises RateLimitError if it is short."""
        limit = limits.of(name)
        if limit is None:
            return
        if amount > limit:
            raise _too_large(key_id, name, limit, amount)
        bucket = self._bucket(key_id, name, limit)
        if bucket.level < amount:
            raise _exceeded(key_id, name, bucket, amount)
        bucket.level -= amount

    def status(self, key_id: str, limits: Limits) -> list[LimitStatus]:
        """Where each of the key's limits stands now."""
        statuses = []
        for name in REPORTED_LIMITS:
            limit = limits.of(name)
            if limit is not None:
                bucket = self._bucket(key_id, name, limit)
                reset = bucket.seconds_until(limit)
                statuses.append(LimitStatus(name, limit, math.floor(bucket.level), reset))
        return statuses

    def _bucket(self, key_id: str, name: LimitName, limit: int) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get((key_id, name))
        if bucket is None:
            bucket = self._buckets[key_id, name] = _Bucket(limit, limit, now)
        bucket.refill(now)
        return bucket


def _exceeded(key_id: str, name: LimitName, bucket: _Bucket, amount: int) -> RateLimitError:
    wait = bucket.seconds_until(amount)
    used = bucket.capacity - math.floor(bucket.level)
    return RateLimitError(
        f"Rate limit reached for key {key_id} on {_per_minute(name)}: Limit {bucket.capacity}, "
        f"Used {used}, Requested {amount}. Please try again in {wait:.3g}s.",
        limit=name,
        retry_after=wait,
    )


def _too_large(key_id: str, name: LimitName, limit: int, amount: int) -> RateLimitError:
    return RateLimitError(
        f"Request too large for key {key_id} on {_per_minute(name)}: Limit {limit}, "
        f"Requested {amount}. Ask for fewer tokens (a shorter prompt or a lower max_tokens).",
        limit=name,
        should_retry=False,  # waiting will not help: the request is larger than the whole limit
    )


def _per_minute(name: LimitName) -> str:
    if name == "requests":
        return "requests per min (RPM)"
    return "tokens per min (TPM)" if name == "tokens" else "batch tokens per min (TPM)"
