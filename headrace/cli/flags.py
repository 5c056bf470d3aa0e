"""What `serve` and `batch` share: the model, engine and log flags, read into configuration;
and the numbers, sizes and times flags are given in."""

from __future__ import annotations

import argparse
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from headrace.cli.log_format import TEXT_FORMAT, JsonFormatter
from headrace.config import (
    EngineConfig,
    ModelConfig,
    default_max_num_batched_tokens,
    default_max_num_seqs,
)

if TYPE_CHECKING:  # headrace.text loads torch: `keys` must not
    from headrace.text import ToolCallFormat

__all__ = [
    "configure_logging",
    "days",
    "engine_config",
    "gib",
    "instant",
    "mib",
    "model_config",
    "model_flags",
]


def model_flags() -> argparse.ArgumentParser:
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
        "--chat-template",
        metavar="TEMPLATE|PATH",
        help="a Jinja chat template, or a file holding one, in place of the model's (default: "
        "the model's; ChatML for a model without one)",
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
        type=gib,
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
    flags.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: a line of prose per record; json: one JSON object per line (time, level, "
        "logger, message, and a request line's fields as keys)",
    )
    return flags


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The model flags' configuration."""
    return ModelConfig(
        model=args.model,
        served_model_names=tuple(args.served_model_name),
        dtype=args.dtype,
        device=args.device,
        max_model_len=args.max_model_len,
        quantization=args.quantization,
        generation_config=args.generation_config,
        chat_template=args.chat_template,
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine flags' configuration."""
    return EngineConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        kv_cache_memory=args.kv_cache_memory,
        enable_prefix_caching=args.prefix_caching,
        enforce_eager=args.enforce_eager,
    )


def configure_logging(args: argparse.Namespace) -> None:
    """Log records at `--log-level` and above to stderr, with their time and source, as
    `--log-format` says."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if args.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])


def _positive(text: str, unit: str) -> float:
    """A positive, finite number of `unit`s."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of {unit}, not {text}")
    return value


def gib(text: str) -> int:
    """A size in GiB, as bytes."""
    return int(_positive(text, "GiB") * 2**30)


def mib(text: str) -> int:
    """A size in MiB, as bytes."""
    return max(1, int(_positive(text, "MiB") * 2**20))


def days(text: str) -> timedelta:
    """A positive number of days."""
    return timedelta(days=_positive(text, "days"))


def instant(text: str) -> datetime:
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
