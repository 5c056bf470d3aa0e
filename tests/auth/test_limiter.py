"""Token buckets per key: full at first, refilled evenly over a minute, on a fake clock."""

from __future__ import annotations

import pytest

from headrace.auth import Limits, LimitStatus, RateLimiter
from headrace.errors import RateLimitError
from tests.fakes import FakeClock


def make_limiter() -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(clock), clock


def test_a_full_bucket_then_a_refusal_that_names_the_wait() -> None:
    limiter, _ = make_limiter()
    limits = Limits(requests=3)
    for _ in range(3):
        limiter.take("key_a", limits, "requests", 1)
    with pytest.raises(RateLimitError) as refused:
        limiter.take("key_a", limits, "requests", 1)
    error = refused.value
    assert error.type == "requests" and error.code == "rate_limit_exceeded"
    assert error.message.startswith("Rate limit reached for key key_a on requests per min (RPM)")
    assert "Limit 3, Used 3, Requested 1. Please try again in 20s." in error.message
    assert error.retry_after == pytest.approx(20.0) and error.should_retry is None


def test_the_bucket_refills_evenly() -> None:
    limiter, clock = make_limiter()
    limits = Limits(tokens=600)  # 10 tokens a second
    limiter.take("key_a", limits, "tokens", 600)
    clock.advance(2.5)
    limiter.take("key_a", limits, "tokens", 25)
    with pytest.raises(RateLimitError) as refused:
        limiter.take("key_a", limits, "tokens", 1)
    assert refused.value.type == "tokens"
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.advance(3600)
    assert limiter.status("key_a", limits) == [LimitStatus("tokens", 600, 600, 0.0)]


def test_a_refusal_takes_nothing() -> None:
    limiter, _ = make_limiter()
    limits = Limits(tokens=100)
    limiter.take("key_a", limits, "tokens", 60)
    with pytest.raises(RateLimitError):
        limiter.take("key_a", limits, "tokens", 50)
    limiter.take("key_a", limits, "tokens", 40)


def test_more_than_the_limit_is_refused_for_good() -> None:
    limiter, _ = make_limiter()
    with pytest.raises(RateLimitError) as refused:
        limiter.take("key_a", Limits(tokens=100), "tokens", 101)
    assert refused.value.message.startswith("Request too large for key key_a on tokens per min")
    assert refused.value.should_retry is False and refused.value.retry_after is None


def test_keys_and_limits_are_counted_apart() -> None:
    limiter, _ = make_limiter()
    limits = Limits(requests=1, tokens=10)
    limiter.take("key_a", limits, "requests", 1)
    limiter.take("key_b", limits, "requests", 1)
    limiter.take("key_a", limits, "tokens", 10)
    assert limiter.status("key_a", limits) == [
        LimitStatus("requests", 1, 0, 60.0),
        LimitStatus("tokens", 10, 0, 60.0),
    ]


def test_no_limit_counts_nothing() -> None:
    limiter, _ = make_limiter()
    for _ in range(1000):
        limiter.take("key_a", Limits(), "requests", 1)
    assert limiter.status("key_a", Limits()) == []


@pytest.mark.parametrize("limits", [{"requests": 0}, {"tokens": -5}])
def test_limits_must_be_positive(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="per minute must be positive"):
        Limits(**limits)
