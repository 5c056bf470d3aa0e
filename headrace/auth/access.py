"""Who may use the API, which models, and how much: static keys, the key store, the limiter."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

from headrace.auth.limiter import Clock, Limits, LimitStatus, RateLimiter
from headrace.auth.store import KeyStore
from headrace.errors import AuthenticationError, ModelNotFoundError, RateLimitError

__all__ = ["UNLIMITED", "Access", "Grant"]


@dataclass(frozen=True)
class Grant:
    # The store's id of the key, by which its use is counted; None when nothing is counted.
    key_id: str | None
    # The model names it may use; None means every served model.
    models: frozenset[str] | None
    # Its requests and tokens per minute.
    limits: Limits

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def require_model(self, model: str) -> None:
        """Raises ModelNotFoundError, as for a model not served, unless the key may use it."""
        if not self.may_use(model):
            raise ModelNotFoundError(model)


# What a static key, or anyone when no key is needed, may do: everything, uncounted.
UNLIMITED = Grant(key_id=None, models=None, limits=Limits())


class Access:
    """Admits requests by their bearer key and counts what each key uses.

    A key is needed when static keys are given or a key store is: a static key may do anything;
    a stored key until it is revoked or expires, on its models, within its limits.
    """

    def __init__(
        self,
        static_keys: Sequence[str] = (),
        store: KeyStore | None = None,
        *,
        limiter: RateLimiter | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self._static_keys = tuple(key.encode() for key in static_keys)
        self._store = store
        self._limiter = limiter or RateLimiter()
        # Unix seconds, for the keys' expiry.
        self._wall_clock = wall_clock

    @property
    def required(self) -> bool:
        return bool(self._static_keys) or self._store is not None

    def authenticate(self, secret: str | None) -> Grant:
        """What the bearer of `secret` (None: no key shown) may do; raises AuthenticationError."""
        if not self.required:
            return UNLIMITED
        if secret is None:
            raise AuthenticationError(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        if self._is_static(secret):
            return UNLIMITED
        key = self._store.find(secret) if self._store is not None else None
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        if refusal := key.refusal(self._wall_clock()):
            raise AuthenticationError(refusal)
        models = None if key.models is None else frozenset(key.models)
        return Grant(key_id=key.id, models=models, limits=key.limits)

    def take_request(self, grant: Grant) -> None:
        """Counts one request; raises RateLimitError when the key has made too many."""
        if grant.key_id is not None:
            self._limiter.take(grant.key_id, grant.limits, "requests", 1)

    def take_tokens(self, grant: Grant, tokens: int) -> None:
        """Counts `tokens`; raises RateLimitError when the key has asked for too many."""
        if grant.key_id is not None:
            self._limiter.take(grant.key_id, grant.limits, "tokens", tokens)

    async def spend_batch_tokens(self, key_id: str | None, tokens: int) -> None:
        """Waits until the key of `key_id` (None: nobody's, never counted) may spend `tokens`
        on a batch request, and counts them against its tokens per minute, in a bucket apart
        from its interactive requests'; raises RateLimitError if they are more than its whole
        limit (waiting would not help)."""
        key = None if key_id is None or self._store is None else self._store.get(key_id)
        if key is None:
            return
        while True:
            try:
                self._limiter.take(key.id, key.limits, "batch_tokens", tokens)
                return
            except RateLimitError as error:
                if error.retry_after is None:
                    raise
                await asyncio.sleep(error.retry_after)

    def limit_status(self, grant: Grant) -> list[LimitStatus]:
        """Where the key's limits stand; empty for a key without limits."""
        if grant.key_id is None:
            return []
        return self._limiter.status(grant.key_id, grant.limits)

    def _is_static(self, secret: str) -> bool:
        # Every key is compared, in constant time, so timing tells nothing about which came close.
        found = False
        for candidate in self._static_keys:
            found |= hmac.compare_digest(secret.encode(), candidate)
        return found
