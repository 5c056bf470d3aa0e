"""headrace's C++: kernels built once per machine, and the operators that call them.

paged_attention.cpp (decode attention over the paged KV cache) and quantized_matmul.cpp
(matmuls over GGUF-style quantized weights and 16-bit ones) have no torch headers, so the C++
compiler builds each in a second or two, with OpenMP, whose runtime torch has already loaded,
and with the host's vector instructions: `-march=native`, or the target named by $HEADRACE_MARCH
(`x86-64-v3` holds a build to AVX2, as on a CPU without AVX-512). operators.cpp, built against
torch's headers once per torch, registers the CPU implementations of headrace's operators, which
call those kernels through pointers bound here. Libraries are cached under
~/.cache/headrace/kernels by a hash of their sources and the command. Without a compiler, or if
a build fails, the operators run their Python implementations, on torch's own operators.
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
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import torch
from torch.utils import cpp_extension

from headrace.model.progress import every_while

__all__ = ["bind_kernels", "cpu_operators", "kernel_target"]

logger = logging.getLogger("headrace.model")

# -ffast-math lets exp() and the sums vectorize; every input to them is finite. It is given to
# the compiler only: linked with it, GCC 12 adds crtfastmath.o, whose constructor turns on
# flush-to-zero for the whole process as the library loads.
_KERNEL_FLAGS = ["-O3", "-ffast-math", "-fopenmp", "-fPIC", "-std=c++17"]
_KERNEL_LINK = ["-shared", "-fopenmp"]
_SUFFIXES = ("float32", "bfloat16")
# The kernels operators.cpp calls, by source; each is defined once per suffix.
_KERNELS = {
    "paged_attention": ("decode_attention",),
    "quantized_matmul": (
        *("q4_linear", "q8_linear", "f16_linear", "bf16_linear"),
        *("q4_dequantize", "q8_dequantize"),
    ),
}


def kernel_target() -> str:
    """The -march the kernels are built for: $HEADRACE_MARCH, else native."""
    return os.environ.get("HEADRACE_MARCH") or "native"


def cpu_operators(*, wait: bool = True) -> bool:
    """Whether headrace's operators run as C++ on CPU tensors, on kernels built for the kernel
    target. The first call builds them (or finds them in the cache) and loads them. With
    `wait=False`, building what the cache lacks (some 10 s on a machine's first start) runs
    on a thread of its own, and this says False until a call after it has finished."""
    if not wait and not _built_in_background().done():
        return False
    return _operators() is not None


def bind_kernels(march: str) -> None:
    """Point the C++ operators at the kernels built for `march` (tests compare targets)."""
    operators = _operators()
    if operators is None:
        raise RuntimeError("headrace's C++ operators are not loaded")
    _bind(operators, march)


def _bind(operators: ctypes.CDLL, march: str) -> None:
    for source, functions in _KERNELS.items():
        library = _kernel_library(source, march)
        if library is None:
            raise RuntimeError(f"{source}.cpp did not build for {march}")
        for function in functions:
            for suffix in _SUFFIXES:
                name = f"{function}_{suffix}"
                address = ctypes.cast(getattr(library, name), ctypes.c_void_p)
                if not operators.headrace_bind(name.encode(), address):
                    raise RuntimeError(f"operators.cpp has no kernel {name}")


@functools.cache
def _built_in_background() -> Future[None]:
    """Building every library the cache lacks, on a thread of its own; done at once if none."""
    done: Future[None] = Future()
    libraries = _libraries(kernel_target())
    cached = all(_built(*library, build=False) is not None for library in libraries)
    if cached or _compiler() is None:
        done.set_result(None)
        return done

    def say(seconds: float) -> None:
        logger.info("building the C++ kernels: %.0f s so far", seconds)

    def build() -> None:
        started = time.perf_counter()
        logger.info("building headrace's C++ kernels for this machine in the background (once)")
        try:
            with every_while(say):
                for library in libraries:
                    _built(*library)
            logger.info("C++ kernels built in %.1f s", time.perf_counter() - started)
        finally:  # whatever happened, the next call loads what was built, or runs on torch's
            done.set_result(None)

    threading.Thread(target=build, name="headrace-kernels", daemon=True).start()
    return done


def _libraries(march: str) -> list[tuple[str, list[str], list[str], bytes]]:
    """What each library is built from: its source's name, compile flags, link flags and
    anything else its build depends on; the kernels for `march`, then operators.cpp."""
    torch_lib = cpp_extension.library_paths()[0]
    flags = [
        "-O2", "-fPIC", "-std=c++20",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *(f"-I{path}" for path in cpp_extension.include_paths()),
    ]  # fmt: skip
    link = ["-shared", f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu"]
    kernels = [(name, [f"-march={march}", *_KERNEL_FLAGS], _KERNEL_LINK, b"") for name in _KERNELS]
    # The headers' version is part of what operators.cpp is built from.
    return [*kernels, ("operators", flags, link, torch.__version__.encode())]


# Loaded once: a library's registrations last as long as the process.
@functools.cache
def _operators() -> ctypes.CDLL | None:
    if any(_kernel_library(source, kernel_target()) is None for source in _KERNELS):
        return None
    built = _built(*_libraries(kernel_target())[-1])
    if built is None:
        return None
    try:
        torch.ops.load_library(str(built))  # type: ignore[no-untyped-call]
        operators = ctypes.CDLL(str(built))
    except OSError as error:
        logger.warning("loading %s failed, using torch's operators: %s", built.name, error)
        return None
    operators.headrace_bind.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    operators.headrace_bind.restype = ctypes.c_bool
    _bind(operators, kernel_target())
    return operators


@functools.cache
def _kernel_library(name: str, march: str) -> ctypes.CDLL | None:
    built = _built(*next(library for library in _libraries(march) if library[0] == name))
    try:
        return None if built is None else ctypes.CDLL(str(built))
    except OSError as error:
        logger.warning("loading %s failed, using torch's operators: %s", built, error)
        return None


def _built(
    name: str, flags: list[str], link: list[str], extra: bytes = b"", *, build: bool = True
) -> Path | None:
    # The library compiled from <name>.cpp with `flags` and linked with `link`, from the cache
    # when it holds it; else built, unless `build` is False.
    source_file = Path(__file__).with_name(f"{name}.cpp")
    compiler = _compiler()
    if compiler is None:
        if build:
            logger.warning("no C++ compiler (set CXX): %s runs on torch's operators", name)
        return None
    # The headers it includes are part of what it is built from.
    sources = [source_file, *sorted(source_file.parent.glob("*.h"))]
    built_from = (
        b"".join(path.read_bytes() for path in sources)
        + " ".join([compiler, *flags, *link]).encode()
        + extra
    )
    digest = hashlib.sha256(built_from).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headrace"
    built = cache / "kernels" / f"{name}-{digest}.so"
    if built.exists():
        return built
    if not build:
        return None
    try:
        _build(compiler, flags, link, source_file, built)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        logger.warning("building %s failed, using torch's operators: %s", source_file.name, detail)
        return None
    return built


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _build(compiler: str, flags: list[str], link: list[str], source: Path, built: Path) -> None:
    built.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed, so a concurrent start never loads half a file.
    with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
        partial = Path(scratch) / built.name
        objects = partial.with_suffix(".o")
        for command in (
            [compiler, *flags, "-c", str(source), "-o", str(objects)],
            # The libraries named in `link` after what uses them.
            [compiler, str(objects), *link, "-o", str(partial)],
        ):
            subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, built)
