"""headrace's C++ kernels (paged_attention.cpp): built once per machine, loaded with ctypes.

The source has no torch headers, so the C++ compiler builds it in about a second, with the
host's vector instructions (-march=native) and OpenMP, whose runtime torch has already loaded.
The library is cached under ~/.cache/headrace/kernels by a hash of the source and the command.
Without a compiler, or if the build fails, callers get None and use torch's own operators.
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

__all__ = ["DecodeAttentionKernel", "decode_attention_kernel"]

logger = logging.getLogger("headrace.model")

_SOURCE = Path(__file__).with_name("paged_attention.cpp")
# -ffast-math lets exp() and the sums vectorize; every input to them is finite.
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_SUFFIXES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}

DecodeAttentionKernel = Callable[..., None]


def decode_attention_kernel(dtype: torch.dtype) -> DecodeAttentionKernel | None:
    """The C++ decode attention for CPU tensors of `dtype`, or None where there is none."""
    library = _library()
    if library is None or dtype not in _SUFFIXES:
        return None
    function: DecodeAttentionKernel = getattr(library, f"decode_attention_{_SUFFIXES[dtype]}")
    return function


@functools.cache
def _library() -> ctypes.CDLL | None:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        logger.warning("no C++ compiler (set CXX): decode attention runs on torch's operators")
        return None
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headrace"
    built = cache / "kernels" / f"paged_attention-{digest}.so"
    try:
        if not built.exists():
            _build(compiler, built)
        library = ctypes.CDLL(str(built))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        logger.warning("building %s failed, using torch's operators: %s", _SOURCE.name, detail)
        return None
    for name in _SUFFIXES.values():
        function = getattr(library, f"decode_attention_{name}")
        function.restype = None
        function.argtypes = [
            *(ctypes.c_void_p, ctypes.c_int64) * 3,  # q, k, v and their row strides
            *(ctypes.c_void_p,) * 6,  # k_cache, v_cache, slots, block_tables, lengths, out
            *(ctypes.c_int64,) * 6,  # n, width, block_size, heads, kv_heads, dim
            ctypes.c_float,  # scale
        ]
    return library


def _build(compiler: str, built: Path) -> None:
    built.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed, so a concurrent start never loads half a file.
    with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
        partial = Path(scratch) / built.name
        command = [compiler, *_FLAGS, str(_SOURCE), "-o", str(partial)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, built)
