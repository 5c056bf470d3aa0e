"""API keys and their limits, without HTTP: the key store, the rate limiter, who may do what."""

from headrace.auth.access import UNLIMITED, Access, Grant
from headrace.auth.keys import ApiKey, IssuedKey
from headrace.auth.limiter import REPORTED_LIMITS, Clock, Limits, LimitStatus, RateLimiter
from headrace.auth.store import KeyStore, default_key_store_path

__all__ = [
    "REPORTED_LIMITS",
    "UNLIMITED",
    "Access",
    "ApiKey",
    "Clock",
    "Grant",
    "IssuedKey",
    "KeyStore",
    "LimitStatus",
    "Limits",
    "RateLimiter",
    "default_key_store_path",
]
