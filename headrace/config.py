"""Frozen configuration, checked when built; values found at run time live elsewhere."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_MODEL_NAME",
    "Device",
    "Dtype",
    "EngineConfig",
    "ModelConfig",
    "Quantization",
    "ServerConfig",
    "default_data_dir",
    "default_max_num_batched_tokens",
    "default_max_num_seqs",
]

Dtype = Literal["auto", "float32", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]
# auto: a GGUF file's quantized weights run as stored (CPU); none: every weight in --dtype;
# int8: besides, every other projection quantized to int8 blocks at load (CPU).
Quantization = Literal["auto", "none", "int8"]

# The model served when `--model` is not given (see headrace.model.source).
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelConfig:
    # A local Hugging Face directory, a local .gguf file, a hub id, or None for the default.
    model: str | None = None
    # Names clients may use for the model; empty means one name derived from `model`.
    served_model_names: tuple[str, ...] = ()
    # Weight and activation dtype; "auto" is bfloat16 on CUDA and on CPUs with native bfloat16
    # (AVX512-BF16), else float32.
    dtype: Dtype = "auto"
    # Where the model runs; "auto" is CUDA when available.
    device: Device = "auto"
    # Cap on prompt + completion tokens; None means the model's own context length.
    max_model_len: int | None = None
    # Which weights stay quantized (see Quantization).
    quantization: Quantization = "auto"
    # Where requests' sampling defaults come from: "auto" (the model's generation_config.json,
    # or the default model's recommended settings), "none", or a path to a generation_config.json
    # or the directory holding one.
    generation_config: str = "auto"
    # A Jinja chat template, or a file holding one, in place of the model's; None: the model's.
    chat_template: str | None = None

    def __post_init__(self) -> None:
        if self.chat_template is not None and not self.chat_template.strip():
            raise ValueError("chat_template must be a Jinja template or a path, not empty")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, not {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.quantization not in ("auto", "none", "int8"):
            raise ValueError(f"quantization must be auto, none or int8, not {self.quantization!r}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ValueError(f"max_model_len must be at least 16, not {self.max_model_len}")
        if not self.generation_config.strip():
            raise ValueError("generation_config must be auto, none or a path, not empty")
        if any(not name.strip() for name in self.served_model_names):
            raise ValueError("served model names must not be empty")
        if len(set(self.served_model_names)) != len(self.served_model_names):
            raise ValueError("served model names must be distinct")


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_max_num_seqs() -> int:
    """32 sequences for every usable core, at most 256: on 2 cores, 64."""
    return min(256, 32 * usable_cores())


def default_max_num_batched_tokens() -> int:
    """1,024 tokens a step for every usable core, at most 8,192: on 2 cores, 2,048."""
    return min(8192, 1024 * usable_cores())


@dataclass(frozen=True)
class EngineConfig:
    # Most sequences decoded together in one step; by default from the cores (see
    # default_max_num_seqs), so that a burst beyond 16 streams is admitted, not queued.
    max_num_seqs: int = field(default_factory=default_max_num_seqs)
    # Most tokens (prefill chunks + decodes) computed in one step; by default from the cores.
    max_num_batched_tokens: int = field(default_factory=default_max_num_batched_tokens)
    # Token positions per KV-cache block.
    block_size: int = 16
    # Bytes of KV cache; None means room for every sequence's whole context, up to 2 GiB.
    kv_cache_memory: int | None = None
    # Whether requests reuse the cached blocks of prompts that start the same way.
    enable_prefix_caching: bool = True
    # Whether to run the model eagerly on the CPU rather than compile its decode step.
    enforce_eager: bool = False

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be positive, not {self.max_num_seqs}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be at least max_num_seqs")
        if self.block_size not in (8, 16, 32, 64, 128):
            raise ValueError(f"block_size must be 8, 16, 32, 64 or 128, not {self.block_size}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError("kv_cache_memory must be positive")


def default_data_dir() -> Path:
    """headrace in $XDG_DATA_HOME, else in ~/.local/share."""
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "headrace"


@dataclass(frozen=True)
class ServerConfig:
    # Address to listen on.
    host: str = "127.0.0.1"
    # TCP port to listen on; 0 picks a free one.
    port: int = 8000
    # Bearer keys accepted on every route but /health, without limits.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # SQLite file of keys made by `headrace keys create`; None means none. With neither these
    # nor `api_keys`, no key is needed.
    key_store: Path | None = None
    # Requests that may wait for the engine; a chat completion beyond them is refused with 503.
    max_waiting: int = 256
    # Largest request body accepted, in bytes; a larger one is refused with 413.
    max_body_bytes: int = 8 * 2**20
    # Seconds a SIGTERM lets running requests finish before it ends them and the server stops.
    drain_timeout: float = 30.0
    # Where uploaded files, batches and their results are kept (SQLite + files), across restarts.
    data_dir: Path = field(default_factory=default_data_dir)
    # Largest file accepted by POST /v1/files, in bytes; a larger one is refused with 413.
    max_file_bytes: int = 200 * 2**20
    # HTTPS: the server's private key and its certificate chain (PEM files); both or neither.
    ssl_keyfile: Path | None = None
    ssl_certfile: Path | None = None
    # Origins whose pages may call the API from a browser (CORS); "*" for any. None by default,
    # unlike vLLM's "*": a page on any site could otherwise read the Files API's files.
    allowed_origins: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        """ "https" with a key and certificate, else "http"."""
        return "https" if self.ssl_certfile is not None else "http"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        if not 0 <= self.drain_timeout < float("inf"):
            raise ValueError(f"drain_timeout must be 0 or more seconds, not {self.drain_timeout}")
        if any(not key for key in self.api_keys):
            raise ValueError("API keys must not be empty")
        if self.max_waiting < 1:
            raise ValueError(f"max_waiting must be positive, not {self.max_waiting}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, not {self.max_body_bytes}")
        if self.max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be positive, not {self.max_file_bytes}")
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ValueError("HTTPS needs both ssl_keyfile and ssl_certfile")
        for pem in (self.ssl_keyfile, self.ssl_certfile):
            if pem is not None and not pem.is_file():
                raise ValueError(f"no such file: {pem}")
        for origin in self.allowed_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"an allowed origin is '*' or scheme://host[:port] (e.g. "
                    f"https://app.example.com, no path), not {origin!r}"
                )
