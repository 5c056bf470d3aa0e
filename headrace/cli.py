"""`headrace serve`: configuration from flags and environment, then the app under uvicorn.

`headrace batch INPUT.jsonl -o OUTPUT.jsonl`: a batch input file run offline on the same engine,
with a progress bar.

`headrace keys create|list|revoke`: the API keys in the key store. These import neither torch nor
the server: what `serve` alone needs is imported when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from headrace.auth import Access, ApiKey, KeyStore, Limits, default_key_store_path
from headrace.config import (
    EngineConfig,
    ModelConfig,
    ServerConfig,
    default_data_dir,
    default_max_num_batched_tokens,
    default_max_num_seqs,
)

if TYPE_CHECKING:  # headrace.text loads torch: `keys` must not
    from headrace.batch.offline import OfflineInput, OfflineSummary
    from headrace.text import ToolCallFormat

__all__ = ["main"]

logger = logging.getLogger("headrace")

# Where keys are kept unless told otherwise (see headrace.auth.default_key_store_path).
_DEFAULT_STORE = "$XDG_DATA_HOME/headrace/keys.sqlite3 (~/.local/share/headrace/...)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    model_flags = _model_flags()
    serve = commands.add_parser(
        "serve", parents=[model_flags], help="serve a model over the OpenAI API"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted bearer key (repeatable; also HEADRACE_API_KEYS, comma-separated)",
    )
    serve.add_argument(
        "--key-store",
        metavar="PATH",
        help="SQLite file of keys from `headrace keys create`; needed when named (default: "
        f"$HEADRACE_KEY_STORE, else {_DEFAULT_STORE}, used if it exists)",
    )
    serve.add_argument(
        "--max-waiting",
        type=int,
        default=ServerConfig.max_waiting,
        help="requests that may wait for the engine; beyond them chat completions get 503",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=ServerConfig.max_body_bytes,
        help="largest request body accepted; a larger one gets 413",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        metavar="PATH",
        help="where uploaded files and batches are kept, across restarts (default: "
        "$XDG_DATA_HOME/headrace, else ~/.local/share/headrace)",
    )
    serve.add_argument(
        "--max-file-size",
        type=_mib,
        default=ServerConfig.max_file_bytes,
        metavar="MIB",
        help=f"largest file uploaded to /v1/files, in MiB; a larger one gets 413 (default: "
        f"{ServerConfig.max_file_bytes // 2**20})",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=ServerConfig.drain_timeout,
        metavar="SECONDS",
        help="on SIGTERM, how long running requests may finish before they are ended",
    )
    batch = commands.add_parser(
        "batch",
        parents=[model_flags],
        help="run a batch input file offline, on the same engine",
        description="Run an OpenAI Batch API input file in this process, up to --max-num-seqs "
        "requests at once, and write every result to OUTPUT in input order.",
    )
    batch.add_argument(
        "input",
        type=Path,
        metavar="INPUT.jsonl",
        help="one request a line ({custom_id, method: POST, url, body}), every url the first "
        "line's: /v1/chat/completions or /v1/completions",
    )
    batch.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUTPUT.jsonl",
        help="the result of each request, failed ones too, a line each in input order; "
        "replaced only once every request has its line",
    )
    _add_keys_parser(commands)
    return parser


def _model_flags() -> argparse.ArgumentParser:
    """The flags of the model, the engine and the log, shared by `serve` and `batch`."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--model",
        help="local Hugging Face directory, local .gguf file or hub id "
        "(default: SmolLM2-135M-Instruct, fetched once and cached)",
    )
    flags.add_argument(
        "--served-model-name", nargs="+", default=[], help="names clients may use for the model"
    )
    flags.add_argument("--max-model-len", type=int, help="prompt + completion token cap")
    flags.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    flags.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    flags.add_argument(
        "--quantization",
        default="auto",
        choices=["auto", "none", "int8"],
        help="auto: a GGUF file's quantized weights run as stored (CPU); none: every weight "
        "dequantized to --dtype; int8: float projections quantized to int8 blocks at load (CPU)",
    )
    flags.add_argument(
        "--generation-config",
        default="auto",
        metavar="auto|none|PATH",
        help="sampling defaults for parameters a request leaves out; auto: the model's "
        "generation_config.json (the default model: its card's recommended settings); none: "
        "none; PATH: a generation_config.json or the directory holding one",
    )
    flags.add_argument(
        "--max-num-seqs",
        type=int,
        default=default_max_num_seqs(),
        help="sequences decoded together (default: 32 per core, at most 256)",
    )
    flags.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=default_max_num_batched_tokens(),
        help="tokens (decodes + prefill chunks) per engine step (default: 1024 per core, at "
        "most 8192)",
    )
    flags.add_argument(
        "--kv-cache-memory",
        type=_gib,
        metavar="GIB",
        help="KV cache size in GiB (default: every sequence's whole context, up to 2)",
    )
    flags.add_argument("--block-size", type=int, default=EngineConfig.block_size)
    flags.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="compute every prompt in full, even where an earlier one started the same way",
    )
    flags.add_argument(
        "--enforce-eager",
        action="store_true",
        help="run the model eagerly: start in seconds, not compiling the CPU decode step first",
    )
    flags.add_argument(
        "--tool-call-parser",
        type=_tool_call_format,
        metavar="FORMAT",
        help="how the model writes tool calls: hermes, llama3_json, mistral or generic "
        "(default: told from its chat template)",
    )
    flags.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return flags


def _add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--key-store",
        metavar="PATH",
        help=f"SQLite file of keys (default: $HEADRACE_KEY_STORE, else {_DEFAULT_STORE})",
    )
    create = key_commands.add_parser(
        "create", parents=[store], help="create a key and print it; it is shown only this once"
    )
    create.add_argument("--name", default="", help="what or whom the key is for")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=_days, metavar="DAYS", help="expire after DAYS")
    expiry.add_argument("--expires", type=_instant, metavar="ISO", help="expire at this time")
    create.add_argument("--models", nargs="+", metavar="MODEL", help="the only models it may use")
    create.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: no limit)")
    key_commands.add_parser("list", parents=[store], help="list every key, revoked ones too")
    revoke = key_commands.add_parser("revoke", parents=[store], help="revoke a key at once")
    revoke.add_argument("id", help="the key's id, as `headrace keys list` shows it")


def _positive(text: str, unit: str) -> float:
    """A positive, finite number of `unit`s."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of {unit}, not {text}")
    return value


def _gib(text: str) -> int:
    """A size in GiB, as bytes."""
    return int(_positive(text, "GiB") * 2**30)


def _mib(text: str) -> int:
    """A size in MiB, as bytes."""
    return max(1, int(_positive(text, "MiB") * 2**20))


def _days(text: str) -> timedelta:
    """A positive number of days."""
    return timedelta(days=_positive(text, "days"))


def _instant(text: str) -> datetime:
    """An ISO 8601 date or time; UTC unless it names its zone."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO 8601 date or time, not {text}") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _tool_call_format(name: str) -> ToolCallFormat:
    """A tool-call format headrace.text knows (imported only here: it loads torch)."""
    from headrace.text import get_tool_call_format

    try:
        return get_tool_call_format(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _api_keys(flags: Sequence[str]) -> tuple[str, ...]:
    from_env = os.environ.get("HEADRACE_API_KEYS", "")
    return tuple(flags) + tuple(key.strip() for key in from_env.split(",") if key.strip())


def _model_config(args: argparse.Namespace) -> ModelConfig:
    """The model flags' configuration."""
    return ModelConfig(
        model=args.model,
        served_model_names=tuple(args.served_model_name),
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        quantization=args.quantization,
        generation_config=args.generation_config,
    )


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine flags' configuration."""
    return EngineConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        kv_cache_memory=args.kv_cache_memory,
        enable_prefix_caching=args.prefix_caching,
        enforce_eager=args.enforce_eager,
    )


def _serve(args: argparse.Namespace) -> None:
    from headrace.api.app import create_app
    from headrace.api.drain import Drain
    from headrace.api.server import serve
    from headrace.batch import FileStore, MetadataStore
    from headrace.serving.runtime import load_runtime

    model_config, engine_config = _model_config(args), _engine_config(args)
    server_config = ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=_api_keys(args.api_key),
        key_store=_serving_key_store(args.key_store),
        max_waiting=args.max_waiting,
        max_body_bytes=args.max_body_bytes,
        drain_timeout=args.drain_timeout,
        data_dir=(args.data_dir or default_data_dir()).expanduser(),
        max_file_bytes=args.max_file_size,
    )
    access = _access(server_config)
    files = FileStore(MetadataStore(server_config.data_dir))
    logger.info("data directory: %s", server_config.data_dir)
    runtime = load_runtime(model_config, engine_config)
    drain = Drain(runtime.engine)
    app = create_app(
        runtime,
        access=access,
        tool_call_format=args.tool_call_parser,
        max_waiting=server_config.max_waiting,
        max_body_bytes=server_config.max_body_bytes,
        drain=drain,
        files=files,
        max_file_bytes=server_config.max_file_bytes,
        batch_concurrency=engine_config.max_num_seqs,
    )
    logger.info(
        "serving %s on http://%s:%d/v1",
        ", ".join(runtime.model_names),
        server_config.host,
        server_config.port,
    )
    serve(
        app,
        drain,
        host=server_config.host,
        port=server_config.port,
        log_level=args.log_level,
        drain_timeout=server_config.drain_timeout,
    )


def _batch(args: argparse.Namespace) -> None:
    """Checks the input file, then loads the model and runs every request of it to the output
    file; a bad file is each of its errors on stderr and exit status 1, before any loading."""
    from headrace.batch.offline import read_input

    model_config, engine_config = _model_config(args), _engine_config(args)
    source, output = args.input.expanduser(), args.output.expanduser()
    if not source.is_file():
        raise ValueError(f"there is no batch input file at {source}")
    if output.is_dir() or not output.parent.is_dir():
        raise ValueError(f"cannot write the output to {output}: not a file in a directory")
    try:
        batch = read_input(source)
    except OSError as error:
        raise ValueError(f"cannot read {source}: {error.strerror}") from None
    if batch.errors:
        for problem in batch.errors:
            where = f"{source}:{problem.line}" if problem.line is not None else f"{source}"
            print(f"{where}: {problem.code}: {problem.message}", file=sys.stderr)
        print(f"headrace: error: {source} is not a valid batch input file", file=sys.stderr)
        raise SystemExit(1)
    logger.info("%d requests to %s from %s", len(batch.lines), batch.endpoint, source)
    try:
        summary = _run_batch(args, model_config, engine_config, batch, output)
    except KeyboardInterrupt:
        print(f"headrace: interrupted; {output} left as it was", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"headrace: {summary.describe()}; results in {output}", file=sys.stderr)


def _run_batch(
    args: argparse.Namespace,
    model_config: ModelConfig,
    engine_config: EngineConfig,
    batch: OfflineInput,
    output: Path,
) -> OfflineSummary:
    """Loads the model and runs `batch` on its engine, with a progress bar."""
    from headrace.api.errors import status_of
    from headrace.batch.endpoints import Endpoints
    from headrace.batch.offline import run_offline
    from headrace.batch.progress import ProgressBar
    from headrace.serving import Services
    from headrace.serving.runtime import load_runtime

    runtime = load_runtime(model_config, engine_config)
    services = Services.of(runtime, tool_call_format=args.tool_call_parser)
    concurrency = engine_config.max_num_seqs
    endpoints = Endpoints(services.chat, services.completions, status_of, concurrency=concurrency)

    async def run(progress: ProgressBar) -> OfflineSummary:
        runtime.engine.start()  # on this loop: it delivers tokens to it
        try:
            return await run_offline(
                endpoints,
                batch,
                output,
                concurrency=concurrency,
                on_done=progress.update,
            )
        finally:
            runtime.engine.shutdown()

    with ProgressBar(len(batch.lines)) as progress:
        return asyncio.run(run(progress))


def _serving_key_store(flag: str | None) -> Path | None:
    """The key store to check keys against: the one named, else the default one if it exists."""
    path = _key_store_path(flag)
    if path.exists():
        return path
    if flag is not None or os.environ.get("HEADRACE_KEY_STORE"):
        raise _no_key_store(path)
    return None


def _no_key_store(path: Path) -> ValueError:
    return ValueError(f"there is no key store at {path}; `headrace keys create` makes one")


def _access(config: ServerConfig) -> Access:
    store = KeyStore(config.key_store) if config.key_store is not None else None
    if config.api_keys or store is not None:
        where = f" and the keys in {store.path}" if store is not None else ""
        logger.info("API keys needed: %d static key(s)%s", len(config.api_keys), where)
    return Access(config.api_keys, store)


def _key_store_path(flag: str | None) -> Path:
    return Path(flag).expanduser() if flag else default_key_store_path()


def _keys(args: argparse.Namespace) -> None:
    path = _key_store_path(args.key_store)
    # Only `create` makes a store: once one exists, `headrace serve` wants keys.
    if args.keys_command != "create" and not path.exists():
        raise _no_key_store(path)
    store = KeyStore(path)
    if args.keys_command == "create":
        _create_key(store, args)
    elif args.keys_command == "list":
        _list_keys(store.list())
    else:
        key = store.revoke(args.id)
        print(f"revoked {key.id} ({key.prefix}...)", file=sys.stderr)


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


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("serve", "batch"):
            logging.basicConfig(
                level=args.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            (_serve if args.command == "serve" else _batch)(args)
        else:
            _keys(args)
    except ValueError as exc:  # configuration and model-source errors: one line, no traceback
        print(f"headrace: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
