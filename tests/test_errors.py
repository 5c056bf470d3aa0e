"""The error tree: OpenAI's envelope and what a client should do, with no HTTP in it."""

from __future__ import annotations

import pytest

from headrace.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    HeadraceError,
    InternalError,
    MethodNotAllowedError,
    ModelNotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    invalid_value,
    missing_parameter,
)


def test_the_envelope() -> None:
    error = ContextLengthExceededError("Too long.")
    assert error.to_dict() == {
        "error": {
            "message": "Too long.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert str(error) == "Too long."


@pytest.mark.parametrize(
    "error",
    [
        ModelNotFoundError("m"),
        RateLimitError("x", limit="requests", retry_after=1.0),
        MethodNotAllowedError("x", allowed=["GET"]),
        InternalError(),
    ],
)
def test_no_error_knows_http(error: HeadraceError) -> None:
    assert not hasattr(error, "status") and not hasattr(error, "headers")


def test_advice_on_trying_again() -> None:
    assert (InternalError().retry_after, InternalError().should_retry) == (None, None)
    overloaded = EngineOverloadedError(1.5)
    assert overloaded.retry_after == 1.5 and overloaded.code == "engine_overloaded"
    assert isinstance(overloaded, ServiceUnavailableError)
    too_large = RateLimitError("x", limit="tokens", should_retry=False)
    assert too_large.type == "tokens" and too_large.should_retry is False


def test_a_method_not_allowed_names_the_allowed_ones() -> None:
    assert MethodNotAllowedError("x", allowed=iter(["GET", "HEAD"])).allowed == ("GET", "HEAD")
    assert MethodNotAllowedError("x").allowed == ()


def test_parameter_helpers() -> None:
    missing = missing_parameter("messages.0.content")
    assert (missing.param, missing.code) == ("messages.0.content", "missing_required_parameter")
    wrong = invalid_value("n", "must be 1", code="integer_above_max_value")
    assert wrong.message == "Invalid value for 'n': must be 1."
    assert (wrong.param, wrong.code) == ("n", "integer_above_max_value")
