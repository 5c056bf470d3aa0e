"""Issued API keys: the secret, shown once, and the record kept of it."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from headrace.auth.limiter import Limits

__all__ = ["ApiKey", "IssuedKey", "digest", "new_secret", "prefix_of"]

# How every issued key begins.
_SCHEME = "sk-hr-"
# Characters kept in the clear: the scheme and six random ones, to find and recognise a key by.
_PREFIX_LENGTH = len(_SCHEME) + 6


@dataclass(frozen=True)
class ApiKey:
    # "key_" and 16 hex digits: how `headrace keys revoke` names it.
    id: str
    # What or whom it is for; may be empty.
    name: str
    # Its first characters: enough to recognise it, far too few to use it.
    prefix: str
    # When it was created, in Unix seconds.
    created: float
    # When it stops working, in Unix seconds; None means never.
    expires: float | None
    # The model names it may use; None means every served model.
    models: tuple[str, ...] | None
    # Its requests and tokens per minute.
    limits: Limits
    # When it was revoked, in Unix seconds; None while it is not.
    revoked: float | None

    def refusal(self, now: float) -> str | None:
        """Why the key no longer works at `now` (Unix seconds), or None while it does."""
        if self.revoked is not None:
            return "This API key has been revoked."
        if self.expires is not None and now >= self.expires:
            return "This API key has expired."
        return None


@dataclass(frozen=True)
class IssuedKey:
    # The record kept of it.
    key: ApiKey
    # The key itself, to be shown once and never stored.
    secret: str


def new_secret() -> str:
    """A fresh key: the scheme and 256 random bits."""
    return _SCHEME + secrets.token_urlsafe(32)


def prefix_of(secret: str) -> str:
    return secret[:_PREFIX_LENGTH]


def digest(secret: str) -> str:
    """What is stored instead of the key. Keys are random, so one round of SHA-256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()
