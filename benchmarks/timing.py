"""What one benchmark run records per stream, and the metrics derived from it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

__all__ = [
    "StreamTiming",
    "aggregate_tok_s",
    "decode_tok_s",
    "itls_ms",
    "percentile",
    "steady_decode_tok_s",
    "tpot_ms",
    "ttft_ms",
    "ttfts_ms",
]


@dataclass
class StreamTiming:
    # perf_counter() when the request was submitted.
    start: float
    # perf_counter() when each token (HTTP: each content chunk) reached the caller.
    token_times: list[float] = field(default_factory=list)
    # Tokens generated (HTTP: the usage's completion_tokens).
    num_tokens: int = 0
    # Tokens of the prompt as the model saw it.
    num_prompt_tokens: int = 0
    # The generated token ids (in-process runs only; for the greedy agreement check).
    token_ids: list[int] = field(default_factory=list)

    @property
    def first(self) -> float:
        return self.token_times[0]

    @property
    def last(self) -> float:
        return self.token_times[-1]


def ttft_ms(streams: list[StreamTiming]) -> float:
    """Median over the streams of submit -> first token, in milliseconds."""
    return 1000 * statistics.median(s.first - s.start for s in streams)


def ttfts_ms(streams: list[StreamTiming]) -> list[float]:
    """Every stream's submit -> first token, in milliseconds."""
    return [1000 * (s.first - s.start) for s in streams]


def itls_ms(streams: list[StreamTiming]) -> list[float]:
    """Every gap between consecutive tokens (HTTP: content chunks) of every stream, in ms."""
    return [1000 * (b - a) for s in streams for a, b in pairwise(s.token_times)]


def tpot_ms(stream: StreamTiming) -> float:
    """One stream's time per output token after the first, in milliseconds (1000 / decode rate)."""
    return 1000 / decode_tok_s(stream)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated between the nearest ranks."""
    return float(np.percentile(values, q))


def decode_tok_s(stream: StreamTiming) -> float:
    """One stream's decode rate: tokens after the first over first -> last token."""
    return (stream.num_tokens - 1) / (stream.last - stream.first)


def aggregate_tok_s(streams: list[StreamTiming]) -> float:
    """All output tokens over submit of the first request -> last token of any, prefill included."""
    start = min(s.start for s in streams)
    end = max(s.last for s in streams)
    return sum(s.num_tokens for s in streams) / (end - start)


def steady_decode_tok_s(streams: list[StreamTiming]) -> float:
    """Batched decode rate once every stream has its first token (all prompts prefilled)."""
    all_started = max(s.first for s in streams)
    end = max(s.last for s in streams)
    later = sum(1 for s in streams for t in s.token_times if t > all_started)
    return later / (end - all_started)
