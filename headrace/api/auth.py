"""Bearer API keys on the /v1 routes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request

from headrace.serving import AuthenticationError

__all__ = ["api_key_check"]


def api_key_check(keys: Sequence[str]) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that admits only `Authorization: Bearer <one of keys>`."""
    accepted = tuple(key.encode() for key in keys)

    async def check(request: Request) -> None:
        header = request.headers.get("authorization")
        if not header:
            raise AuthenticationError(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not _is_accepted(key.strip().encode(), accepted):
            raise AuthenticationError("Incorrect API key provided.")

    return check


def _is_accepted(key: bytes, accepted: tuple[bytes, ...]) -> bool:
    # Every key is compared, in constant time, so timing tells nothing about which came close.
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(key, candidate)
    return found
