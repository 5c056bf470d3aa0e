"""`headrace serve`: configuration from flags and environment, then the app under uvicorn."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence

from headrace.config import EngineConfig, ModelConfig, ServerConfig
from headrace.text import TOOL_CALL_FORMATS

__all__ = ["main"]

logger = logging.getLogger("headrace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model over the OpenAI API")
    serve.add_argument(
        "--model",
        help="local Hugging Face directory, local .gguf file or hub id "
        "(default: SmolLM2-135M-Instruct, fetched once and cached)",
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
        "--served-model-name", nargs="+", default=[], help="names clients may use for the model"
    )
    serve.add_argument("--max-model-len", type=int, help="prompt + completion token cap")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--max-num-seqs", type=int, default=EngineConfig.max_num_seqs)
    serve.add_argument(
        "--max-num-batched-tokens", type=int, default=EngineConfig.max_num_batched_tokens
    )
    serve.add_argument(
        "--kv-cache-memory",
        type=_gib,
        metavar="GIB",
        help="KV cache size in GiB (default: every sequence's whole context, up to 2)",
    )
    serve.add_argument("--block-size", type=int, default=EngineConfig.block_size)
    serve.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="compute every prompt in full, even where an earlier one started the same way",
    )
    serve.add_argument(
        "--tool-call-parser",
        choices=TOOL_CALL_FORMATS,
        help="how the model writes tool calls (default: told from its chat template)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=ServerConfig.drain_timeout,
        metavar="SECONDS",
        help="on SIGTERM, how long running requests may finish before they are ended",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def _gib(text: str) -> int:
    """A size in GiB, as bytes."""
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of GiB, not {text}")
    return int(gib * 2**30)


def _api_keys(flags: Sequence[str]) -> tuple[str, ...]:
    from_env = os.environ.get("HEADRACE_API_KEYS", "")
    return tuple(flags) + tuple(key.strip() for key in from_env.split(",") if key.strip())


def _serve(args: argparse.Namespace) -> None:
    from headrace.api.app import create_app
    from headrace.api.drain import Drain
    from headrace.api.server import serve
    from headrace.serving.runtime import load_runtime

    model_config = ModelConfig(
        model=args.model,
        served_model_names=tuple(args.served_model_name),
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
    )
    engine_config = EngineConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        kv_cache_memory=args.kv_cache_memory,
        enable_prefix_caching=args.prefix_caching,
    )
    server_config = ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=_api_keys(args.api_key),
        drain_timeout=args.drain_timeout,
    )
    runtime = load_runtime(model_config, engine_config)
    drain = Drain(runtime.engine)
    app = create_app(
        runtime,
        api_keys=server_config.api_keys,
        tool_call_format=args.tool_call_parser,
        drain=drain,
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


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _serve(args)
    except ValueError as exc:  # configuration and model-source errors: one line, no traceback
        print(f"headrace: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
