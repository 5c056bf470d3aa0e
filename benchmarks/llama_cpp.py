"""llama.cpp's llama-server as a peer: found or built from source, and its weights made.

The sources come from the llama-cpp-python sdist on PyPI, which vendors llama.cpp: pip fetches
it through the user's own pip configuration, and CMake builds the server and the quantize tool
for this CPU. Everything is kept under the peers directory of headrace's cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from headrace.model.source import cache_dir

__all__ = ["LlamaCpp", "check_call", "peers_dir"]

# The sdist that vendors llama.cpp.
_SDIST = "llama-cpp-python"
# Where a build of that sdist leaves its programs, relative to the peers directory, by the
# build folder's name.
_BUILT_SERVERS = "llama_cpp_python-*/vendor/llama.cpp/{build}/bin/llama-server"
_CMAKE_OPTIONS = [
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]
# Instruction sets: this CPU's own, or AVX2 + FMA + F16C alone (as on a CPU without AVX-512).
_ISA_OPTIONS = {
    "native": ["-DGGML_NATIVE=ON"],
    "avx2": [
        *("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON"),
        *("-DGGML_F16C=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF"),
        *("-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF"),
        *("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"),
    ],
}
_BUILD_DIRS = {"native": "build", "avx2": "build-avx2"}
_TARGETS = ["llama-server", "llama-quantize"]


def peers_dir() -> Path:
    """Scratch space for peer servers: $HEADRACE_CACHE_DIR/peers, else ~/.cache/headrace/peers."""
    return cache_dir() / "peers"


class LlamaCpp:
    """A llama.cpp build: llama-server and, beside it, llama-quantize."""

    def __init__(self, server: Path) -> None:
        self.server = server
        self.quantize = server.with_name("llama-quantize")

    @classmethod
    def find_or_build(
        cls, server: Path | None, log: Callable[[str], None], isa: str = "native"
    ) -> LlamaCpp:
        """The given llama-server, else one built for `isa` (native, avx2) under the peers
        directory, else a new build."""
        if server is not None:
            return cls(server)
        built = sorted(peers_dir().glob(_BUILT_SERVERS.format(build=_BUILD_DIRS[isa])))
        if built:
            return cls(built[-1])
        return cls(_build(peers_dir(), isa, log))

    def version(self) -> str:
        """What `llama-server --version` says: version, build number and commit."""
        done = subprocess.run(
            [self.server, "--version"], capture_output=True, text=True, check=False
        )
        lines = (done.stdout + done.stderr).strip().splitlines()
        return lines[0] if lines else "unknown version"

    def weights(self, source: Path, type_name: str, log: Callable[[str], None]) -> Path:
        """`source` requantized to `type_name` (F16, Q8_0, ...), made once into the peers dir."""
        target = peers_dir() / f"{source.stem}.{type_name}.gguf"
        if target.is_file():
            return target
        if not self.quantize.is_file():
            raise SystemExit(f"no llama-quantize beside {self.server} to make {target.name}")
        log(f"making {target.name} with llama-quantize")
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        check_call([self.quantize, "--allow-requantize", source, part, type_name])
        os.replace(part, target)
        return target


def _build(peers: Path, isa: str, log: Callable[[str], None]) -> Path:
    # -> the built llama-server
    peers.mkdir(parents=True, exist_ok=True)
    sdists = sorted(peers.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        log(f"fetching the {_SDIST} sdist into {peers}")
        pip = [sys.executable, "-m", "pip"]
        check_call([*pip, "download", "--no-deps", "--no-binary", ":all:", "--dest", peers, _SDIST])
        sdists = sorted(peers.glob("llama_cpp_python-*.tar.gz"))
    source = peers / sdists[-1].name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if not source.is_dir():
        with tarfile.open(sdists[-1]) as archive:
            archive.extractall(peers, filter="data")
    build = source / _BUILD_DIRS[isa]
    log(f"building llama-server and llama-quantize in {build} (about 10 minutes on 2 cores)")
    check_call(["cmake", "-S", source, "-B", build, *_CMAKE_OPTIONS, *_ISA_OPTIONS[isa]])
    jobs = str(os.cpu_count() or 1)
    check_call(["cmake", "--build", build, "--target", *_TARGETS, "-j", jobs])
    return build / "bin" / "llama-server"


def check_call(argv: Sequence[str | Path]) -> None:
    """Runs a tool quietly; its output is shown only when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise SystemExit(f"{Path(argv[0]).name} failed ({done.returncode}):\n" + "\n".join(tail))
