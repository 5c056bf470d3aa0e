"""The query parameters the list routes share."""

from __future__ import annotations

from headrace.errors import invalid_value

__all__ = ["limit_of"]


def limit_of(text: str | None, default: int) -> int:
    """A list's `limit` parameter: `default` when absent, else an integer (the store checks its
    range), else InvalidRequestError naming it."""
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise invalid_value("limit", f"must be an integer, not '{text}'") from None
