"""`headrace serve`: configuration from flags and environment, then the app under uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from headrace.auth import Access, KeyStore
from headrace.cli.flags import configure_logging, engine_config, mib, model_config
from headrace.cli.keys import DEFAULT_STORE, key_store_path, no_key_store
from headrace.config import ServerConfig, default_data_dir

__all__ = ["add_parser", "run"]

logger = logging.getLogger("headrace")


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    model_flags: argparse.ArgumentParser,
) -> None:
    """The `serve` subcommand: `model_flags` and the server's own."""
    serve = commands.add_parser(
        "serve", parents=[model_flags], help="serve a model over the OpenAI API"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--ssl-keyfile", type=Path, metavar="PEM", help="serve HTTPS with this private key"
    )
    serve.add_argument(
        "--ssl-certfile", type=Path, metavar="PEM", help="and this certificate (chain)"
    )
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
        f"$HEADRACE_KEY_STORE, else {DEFAULT_STORE}, used if it exists)",
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
        type=mib,
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
    serve.add_argument(
        "--allowed-origins",
        nargs="*",
        default=list(ServerConfig.allowed_origins),
        metavar="ORIGIN",
        help="origins whose web pages may call the API from a browser (CORS), e.g. "
        "https://app.example.com, or '*' for any; default: none (the playground at / is the "
        "server's own page)",
    )
    serve.add_argument(
        "--log-requests",
        action="store_true",
        help="each request's log line also carries its prompts' and its output's text (off: "
        "no request text is logged)",
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Loads the model and serves it until SIGTERM."""
    from headrace.api.app import create_app
    from headrace.api.drain import Drain
    from headrace.api.server import serve
    from headrace.batch import FileStore, MetadataStore
    from headrace.serving.runtime import load_runtime

    configure_logging(args)
    models, engine = model_config(args), engine_config(args)
    server_config = ServerConfig(
        host=args.host,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
        port=args.port,
        api_keys=_api_keys(args.api_key),
        key_store=_serving_key_store(args.key_store),
        max_waiting=args.max_waiting,
        max_body_bytes=args.max_body_bytes,
        drain_timeout=args.drain_timeout,
        data_dir=(args.data_dir or default_data_dir()).expanduser(),
        max_file_bytes=args.max_file_size,
        allowed_origins=tuple(args.allowed_origins),
    )
    access = _access(server_config)
    files = FileStore(MetadataStore(server_config.data_dir))
    logger.info("data directory: %s", server_config.data_dir)
    runtime = load_runtime(models, engine)
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
        # As many again as the engine runs wait in its queue, to take a place the step it frees.
        batch_concurrency=2 * engine.max_num_seqs,
        allowed_origins=server_config.allowed_origins,
        log_requests=args.log_requests,
    )
    url = f"{server_config.scheme}://{server_config.host}:{server_config.port}"

    def ready() -> None:  # the last lines of a start, once the server listens
        logger.info("serving %s on %s/v1", ", ".join(runtime.model_names), url)
        logger.info("try it: %s", _curl(url, runtime.model_names[0], keys=access.required))

    serve(app, drain, server_config, log_level=args.log_level, ready=ready)


def _curl(url: str, model: str, *, keys: bool) -> str:
    """A command a person can paste to see the server answer."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    auth = ' -H "Authorization: Bearer $OPENAI_API_KEY"' if keys else ""
    return f"curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'"


def _api_keys(flags: Sequence[str]) -> tuple[str, ...]:
    from_env = os.environ.get("HEADRACE_API_KEYS", "")
    return tuple(flags) + tuple(key.strip() for key in from_env.split(",") if key.strip())


def _serving_key_store(flag: str | None) -> Path | None:
    """The key store to check keys against: the one named, else the default one if it exists."""
    path = key_store_path(flag)
    if path.exists():
        return path
    if flag is not None or os.environ.get("HEADRACE_KEY_STORE"):
        raise no_key_store(path)
    return None


def _access(config: ServerConfig) -> Access:
    store = KeyStore(config.key_store) if config.key_store is not None else None
    if config.api_keys or store is not None:
        where = f" and the keys in {store.path}" if store is not None else ""
        logger.info("API keys needed: %d static key(s)%s", len(config.api_keys), where)
    return Access(config.api_keys, store)
