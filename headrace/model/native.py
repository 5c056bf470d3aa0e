"""headrace's C++ kernels: built once per machine, loaded with ctypes.

paged_attention.cpp (decode attention over the paged KV cache) and quantized_matmul.cpp
(matmuls over GGUF-style quantized weights and 16-bit ones) have no torch headers, so the C++
compiler builds each in a second or two, with OpenMP, whose runtime torch has already loaded,
and with the host's vector instructions: `-march=native`, or the target named by $HEADRACE_MARCH
(`x86-64-v3` holds a build to AVX2, as on a CPU without AVX-512). Libraries are cached under
~/.cache/headrace/kernels by a hash of the source and the command. Without a compiler, or if a
build fails, callers get None and use torch's own operators.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "DecodeAttentionKernel",
    "QuantizedKernels",
    "decode_attention_kernel",
    "kernel_target",
    "quantized_kernels",
]

logger = logging.getLogger("headrace.model")

# -ffast-math lets exp() and the sums vectorize; every input to them is finite.
_FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_SUFFIXES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}

_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
# Each kernel's arguments, by source; every function is defined once per suffix.
_SIGNATURES: dict[str, dict[str, list[type]]] = {
    "paged_attention": {
        "decode_attention": [
            *(_POINTER, _INT) * 3,  # q, k, v and their row strides
            *(_POINTER,) * 6,  # k_cache, v_cache, slots, block_tables, lengths, out
            *(_INT,) * 6,  # n, width, block_size, heads, kv_heads, dim
            ctypes.c_float,  # scale
        ],
    },
    "quantized_matmul": {
        # x, tokens, k, packed, scale, min, n, out, ldo
        "q4_linear": [_POINTER, _INT, _INT, *(_POINTER,) * 3, _INT, _POINTER, _INT],
        # x, tokens, k, q, scale, group, n, out, ldo
        "q8_linear": [_POINTER, _INT, _INT, _POINTER, _POINTER, _INT, _INT, _POINTER, _INT],
        # packed, scale, min, n, k, out
        "q4_dequantize": [*(_POINTER,) * 3, _INT, _INT, _POINTER],
        # q, scale, group, n, k, out
        "q8_dequantize": [_POINTER, _POINTER, _INT, _INT, _INT, _POINTER],
        # x, tokens, k, w, n, out, ldo (IEEE half and bfloat16 weights)
        "f16_linear": [_POINTER, _INT, _INT, _POINTER, _INT, _POINTER, _INT],
        "bf16_linear": [_POINTER, _INT, _INT, _POINTER, _INT, _POINTER, _INT],
    },
}

DecodeAttentionKernel = Callable[..., None]


class QuantizedKernels:
    """quantized_matmul.cpp's functions for activations of one dtype (float32 or bfloat16)."""

    def __init__(self, library: ctypes.CDLL, dtype: torch.dtype) -> None:
        suffix = _SUFFIXES[dtype]
        self.q4_linear = getattr(library, f"q4_linear_{suffix}")
        self.q8_linear = getattr(library, f"q8_linear_{suffix}")
        self.q4_dequantize = getattr(library, f"q4_dequantize_{suffix}")
        self.q8_dequantize = getattr(library, f"q8_dequantize_{suffix}")
        self.f16_linear = getattr(library, f"f16_linear_{suffix}")
        self.bf16_linear = getattr(library, f"bf16_linear_{suffix}")


def kernel_target() -> str:
    """The -march the kernels are built for: $HEADRACE_MARCH, else native."""
    return os.environ.get("HEADRACE_MARCH") or "native"


def decode_attention_kernel(dtype: torch.dtype) -> DecodeAttentionKernel | None:
    """The C++ decode attention for CPU tensors of `dtype`, or None where there is none."""
    library = _library("paged_attention", kernel_target())
    if library is None or dtype not in _SUFFIXES:
        return None
    function: DecodeAttentionKernel = getattr(library, f"decode_attention_{_SUFFIXES[dtype]}")
    return function


def quantized_kernels(dtype: torch.dtype, march: str | None = None) -> QuantizedKernels | None:
    """The quantized matmuls for activations of `dtype`, built for `march` (default: the
    kernel target), or None where they cannot be built."""
    return _quantized_kernels(dtype, march or kernel_target())


# Looked up on every matmul of every step, so looked up once.
@functools.cache
def _quantized_kernels(dtype: torch.dtype, march: str) -> QuantizedKernels | None:
    library = _library("quantized_matmul", march)
    if library is None or dtype not in _SUFFIXES:
        return None
    return QuantizedKernels(library, dtype)


@functools.cache
def _library(name: str, march: str) -> ctypes.CDLL | None:
    source_file = Path(__file__).with_name(f"{name}.cpp")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        logger.warning("no C++ compiler (set CXX): %s runs on torch's operators", name)
        return None
    flags = [f"-march={march}", *_FLAGS]
    # The headers it includes are part of what it is built from.
    sources = [source_file, *sorted(source_file.parent.glob("*.h"))]
    built_from = (
        b"".join(path.read_bytes() for path in sources) + " ".join([compiler, *flags]).encode()
    )
    digest = hashlib.sha256(built_from).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headrace"
    built = cache / "kernels" / f"{name}-{digest}.so"
    try:
        if not built.exists():
            _build(compiler, flags, source_file, built)
        library = ctypes.CDLL(str(built))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        logger.warning("building %s failed, using torch's operators: %s", source_file.name, detail)
        return None
    for function_name, argtypes in _SIGNATURES[name].items():
        for suffix in _SUFFIXES.values():
            function = getattr(library, f"{function_name}_{suffix}")
            function.restype = None
            function.argtypes = argtypes
    return library


def _build(compiler: str, flags: list[str], source: Path, built: Path) -> None:
    built.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed, so a concurrent start never loads half a file.
    with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
        partial = Path(scratch) / built.name
        command = [compiler, *flags, str(source), "-o", str(partial)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, built)
