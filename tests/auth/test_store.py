"""The key store keeps a digest of each key, never the key, and sees other processes' changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from headrace.auth import KeyStore, Limits, default_key_store_path


def test_a_created_key_is_found_by_its_secret_alone(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    issued = store.create(name="ci", models=["m1", "m2"], limits=Limits(requests=5, tokens=900))
    assert issued.secret.startswith("sk-hr-") and len(issued.secret) > 40
    assert issued.key.prefix == issued.secret[:12]
    assert store.find(issued.secret) == issued.key
    assert store.find(issued.secret + "x") is None
    assert store.find(issued.secret[:-1]) is None
    assert store.list() == [issued.key]
    assert issued.key.models == ("m1", "m2") and issued.key.limits == Limits(5, 900)


def test_only_a_digest_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    issued = KeyStore(path).create()
    assert issued.secret.encode() not in path.read_bytes()
    assert issued.secret[:12].encode() in path.read_bytes()
    assert path.stat().st_mode & 0o077 == 0


def test_revoking_is_seen_by_another_open_store(tmp_path: Path) -> None:
    server, cli = KeyStore(tmp_path / "keys.sqlite3"), KeyStore(tmp_path / "keys.sqlite3")
    issued = cli.create(expires=time.time() + 60)
    revoked = cli.revoke(issued.key.id)
    assert revoked.revoked is not None
    found = server.find(issued.secret)
    assert found is not None and found.refusal(time.time()) == "This API key has been revoked."
    assert cli.revoke(issued.key.id) == revoked  # again: nothing changes


def test_expiry(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys.sqlite3").create(expires=1000.0).key
    assert key.refusal(999.0) is None
    assert key.refusal(1000.0) == "This API key has expired."


def test_revoking_an_unknown_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no key has the id 'key_nope'"):
        KeyStore(tmp_path / "keys.sqlite3").revoke("key_nope")


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite3"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="cannot open the key store"):
        KeyStore(path)


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HEADRACE_KEY_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_key_store_path() == tmp_path / "headrace" / "keys.sqlite3"
    monkeypatch.setenv("HEADRACE_KEY_STORE", str(tmp_path / "elsewhere.db"))
    assert default_key_store_path() == tmp_path / "elsewhere.db"
