"""Who is admitted: static keys do anything; stored keys until revoked or expired, within limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.auth import UNLIMITED, Access, KeyStore, Limits, RateLimiter
from headrace.errors import AuthenticationError, ModelNotFoundError, RateLimitError
from tests.fakes import FakeClock


def make_access(tmp_path: Path, static_keys: tuple[str, ...] = ("sk-static",)) -> Access:
    clock = FakeClock()
    return Access(static_keys, KeyStore(tmp_path / "keys.sqlite3"), limiter=RateLimiter(clock))


def test_no_key_sources_admit_anyone() -> None:
    access = Access()
    assert not access.required
    assert access.authenticate(None) is UNLIMITED
    assert access.authenticate("anything") is UNLIMITED


def test_a_static_key_may_do_anything(tmp_path: Path) -> None:
    access = make_access(tmp_path)
    grant = access.authenticate("sk-static")
    assert grant is UNLIMITED
    for _ in range(100):
        access.take_request(grant)
    assert access.limit_status(grant) == []


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "You didn't provide an API key."),
        ("", "Incorrect API key provided."),
        ("sk-static2", "Incorrect API key provided."),
        ("sk-hr-unknown-key", "Incorrect API key provided."),
    ],
)
def test_refused(tmp_path: Path, secret: str | None, message: str) -> None:
    with pytest.raises(AuthenticationError) as refused:
        make_access(tmp_path).authenticate(secret)
    assert refused.value.message.startswith(message)


def test_a_stored_key_until_it_is_revoked(tmp_path: Path) -> None:
    access = make_access(tmp_path)
    store = KeyStore(tmp_path / "keys.sqlite3")
    issued = store.create(models=["m1"], limits=Limits(requests=1))
    grant = access.authenticate(issued.secret)
    assert grant.key_id == issued.key.id and grant.models == {"m1"}
    store.revoke(issued.key.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        access.authenticate(issued.secret)


def test_an_expired_key(tmp_path: Path) -> None:
    access = Access(store=KeyStore(tmp_path / "keys.sqlite3"), wall_clock=FakeClock(2000.0))
    issued = KeyStore(tmp_path / "keys.sqlite3").create(expires=1999.0)
    with pytest.raises(AuthenticationError, match="expired"):
        access.authenticate(issued.secret)


def test_models_are_granted_by_name(tmp_path: Path) -> None:
    access = make_access(tmp_path)
    grant = access.authenticate(KeyStore(tmp_path / "keys.sqlite3").create(models=["m1"]).secret)
    grant.require_model("m1")
    with pytest.raises(ModelNotFoundError) as refused:
        grant.require_model("m2")
    assert refused.value.code == "model_not_found"
    assert refused.value.message == (
        "The model `m2` does not exist or you do not have access to it."
    )


def test_requests_and_tokens_are_counted_per_key(tmp_path: Path) -> None:
    access = make_access(tmp_path)
    store = KeyStore(tmp_path / "keys.sqlite3")
    limits = Limits(requests=2, tokens=100)
    first, second = (access.authenticate(store.create(limits=limits).secret) for _ in range(2))
    access.take_request(first)
    access.take_tokens(first, 80)
    with pytest.raises(RateLimitError, match="tokens per min"):
        access.take_tokens(first, 30)
    access.take_tokens(second, 100)
    assert [status.remaining for status in access.limit_status(first)] == [1, 20]


async def test_batch_tokens_wait_in_a_bucket_apart_from_interactive_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    store = KeyStore(tmp_path / "keys.sqlite3")
    access = Access(store=store, limiter=RateLimiter(clock))
    key = store.create(limits=Limits(requests=2, tokens=100))
    grant = access.authenticate(key.secret)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr("headrace.auth.access.asyncio.sleep", sleep)
    access.take_tokens(grant, 80)
    await access.spend_batch_tokens(grant.key_id, 100)  # its own bucket: still full
    assert slept == []
    await access.spend_batch_tokens(grant.key_id, 60)  # waits for 60 of 100 per minute
    assert sum(slept) == pytest.approx(36.0)
    assert [status.remaining for status in access.limit_status(grant)] == [2, 20 + 60]
    with pytest.raises(RateLimitError, match="batch tokens per min") as error:
        await access.spend_batch_tokens(grant.key_id, 101)  # more than the whole limit
    assert error.value.should_retry is False
    await access.spend_batch_tokens(None, 10**9)  # the shared owner is never counted
