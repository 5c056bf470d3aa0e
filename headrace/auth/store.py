"""Issued API keys kept in SQLite: only a digest of each key, never the key itself."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from headrace.auth.keys import ApiKey, IssuedKey, digest, new_secret, prefix_of
from headrace.auth.limiter import Limits

__all__ = ["KeyStore", "default_key_store_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    digest TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    models TEXT,
    rpm INTEGER,
    tpm INTEGER,
    revoked REAL
);
CREATE INDEX IF NOT EXISTS api_keys_by_prefix ON api_keys (prefix);
"""
_T = TypeVar("_T")
_COLUMNS = "id, name, prefix, created, expires, models, rpm, tpm, revoked"


def default_key_store_path() -> Path:
    """$HEADRACE_KEY_STORE, else keys.sqlite3 in $XDG_DATA_HOME/headrace (~/.local/share/...)."""
    explicit = os.environ.get("HEADRACE_KEY_STORE")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "headrace" / "keys.sqlite3"


class KeyStore:
    """A SQLite file of issued keys; other processes may add and revoke keys while it is open."""

    def __init__(self, path: Path) -> None:
        """Opens the store at `path`, creating it (readable by its owner only) if need be."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.touch(mode=0o600)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise ValueError(f"cannot open the key store {path}: {error}") from None
        # Where it lives.
        self.path = path

    def create(
        self,
        *,
        name: str = "",
        expires: float | None = None,
        models: Sequence[str] | None = None,
        limits: Limits | None = None,
    ) -> IssuedKey:
        """Issues a new key; `expires` is in Unix seconds."""
        secret = new_secret()
        key = ApiKey(
            id=f"key_{secrets.token_hex(8)}",
            name=name,
            prefix=prefix_of(secret),
            created=time.time(),
            expires=expires,
            models=tuple(models) if models is not None else None,
            limits=limits or Limits(),
            revoked=None,
        )
        with self._db:
            self._db.execute(
                f"INSERT INTO api_keys ({_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.name,
                    key.prefix,
                    key.created,
                    key.expires,
                    None if key.models is None else json.dumps(key.models),
                    key.limits.requests,
                    key.limits.tokens,
                    None,
                    digest(secret),
                ),
            )
        return IssuedKey(key, secret)

    def list(self) -> list[ApiKey]:
        """Every key ever issued, revoked ones too, oldest first."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created, id")
        return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revokes the key at once, for every server on this store; ValueError if there is none."""
        with self._db:
            self._db.execute(
                "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), key_id),
            )
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None:
            raise ValueError(f"no key has the id {key_id!r}; `headrace keys list` shows them")
        return _key(row)

    def get(self, key_id: str) -> ApiKey | None:
        """The record of the key of id `key_id`, revoked or expired ones too; None if none."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        found = row.fetchone()
        return None if found is None else _key(found)

    def find(self, secret: str) -> ApiKey | None:
        """The record of `secret`, revoked or expired ones too, or None if it was never issued."""
        wanted = digest(secret)
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, digest FROM api_keys WHERE prefix = ?", (prefix_of(secret),)
        ).fetchall()
        for *columns, stored in rows:
            if hmac.compare_digest(stored, wanted):
                return _key(tuple(columns))
        return None

    def close(self) -> None:
        self._db.close()


def _key(row: tuple[object, ...]) -> ApiKey:
    key_id, name, prefix, created, expires, models, rpm, tpm, revoked = row
    assert isinstance(key_id, str) and isinstance(name, str) and isinstance(prefix, str)
    assert isinstance(created, float)
    return ApiKey(
        id=key_id,
        name=name,
        prefix=prefix,
        created=created,
        expires=_optional(float, expires),
        models=None if models is None else tuple(json.loads(str(models))),
        limits=Limits(requests=_optional(int, rpm), tokens=_optional(int, tpm)),
        revoked=_optional(float, revoked),
    )


def _optional(kind: type[_T], value: object) -> _T | None:
    assert value is None or isinstance(value, kind)
    return value
