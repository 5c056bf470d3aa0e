"""`headrace keys create|list|revoke`: the API keys in the key store, without torch or the
server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from headrace.auth import ApiKey, KeyStore, Limits, default_key_store_path
from headrace.cli.flags import days, instant

__all__ = ["DEFAULT_STORE", "add_parser", "key_store_path", "no_key_store", "run"]

# Where keys are kept unless told otherwise (see headrace.auth.default_key_store_path).
DEFAULT_STORE = "$XDG_DATA_HOME/headrace/keys.sqlite3 (~/.local/share/headrace/...)"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `keys` subcommand and its own: create, list, revoke."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys.set_defaults(run=run)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--key-store",
        metavar="PATH",
        help=f"SQLite file of keys (default: $HEADRACE_KEY_STORE, else {DEFAULT_STORE})",
    )
    create = key_commands.add_parser(
        "create", parents=[store], help="create a key and print it; it is shown only this once"
    )
    create.add_argument("--name", default="", help="what or whom the key is for")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=days, metavar="DAYS", help="expire after DAYS")
    expiry.add_argument("--expires", type=instant, metavar="ISO", help="expire at this time")
    create.add_argument("--models", nargs="+", metavar="MODEL", help="the only models it may use")
    create.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: no limit)")
    key_commands.add_parser("list", parents=[store], help="list every key, revoked ones too")
    revoke = key_commands.add_parser("revoke", parents=[store], help="revoke a key at once")
    revoke.add_argument("id", help="the key's id, as `headrace keys list` shows it")


def run(args: argparse.Namespace) -> None:
    path = key_store_path(args.key_store)
    # Only `create` makes a store: once one exists, `headrace serve` wants keys.
    if args.keys_command != "create" and not path.exists():
        raise no_key_store(path)
    store = KeyStore(path)
    if args.keys_command == "create":
        _create_key(store, args)
    elif args.keys_command == "list":
        _list_keys(store.list())
    else:
        key = store.revoke(args.id)
        print(f"revoked {key.id} ({key.prefix}...)", file=sys.stderr)


def key_store_path(flag: str | None) -> Path:
    return Path(flag).expanduser() if flag else default_key_store_path()


def no_key_store(path: Path) -> ValueError:
    return ValueError(f"there is no key store at {path}; `headrace keys create` makes one")


def _create_key(store: KeyStore, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    expires = now + args.expires_in if args.expires_in else args.expires
    if expires is not None and expires <= now:
        raise ValueError(f"--expires must be in the future, not {expires.isoformat()}")
    issued = store.create(
        name=args.name,
        expires=expires.timestamp() if expires else None,
        models=args.models,
        limits=Limits(requests=args.rpm, tokens=args.tpm),
    )
    print(issued.secret)
    print(f"created {issued.key.id} in {store.path}; the key is shown only once", file=sys.stderr)


def _list_keys(keys: Sequence[ApiKey]) -> None:
    """One aligned row per key; the key itself is never shown, only its prefix."""
    header = ("id", "name", "prefix", "created", "expires", "models", "rpm", "tpm", "revoked")
    rows = [header, *(_key_row(key) for key in keys)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _key_row(key: ApiKey) -> tuple[str, ...]:
    return (
        key.id,
        key.name or "-",
        key.prefix,
        _utc(key.created),
        _utc(key.expires),
        ",".join(key.models) if key.models is not None else "all",
        str(key.limits.requests or "-"),
        str(key.limits.tokens or "-"),
        _utc(key.revoked),
    )


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
