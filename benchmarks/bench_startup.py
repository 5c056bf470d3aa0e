"""How soon a fresh `headrace serve` answers: seconds from the process's start to the first
token of a chat, and to the compiled decode step, with an empty compile cache (a fresh
TORCHINDUCTOR_CACHE_DIR and kernel cache: XDG_CACHE_HOME) and then with the cache it left.

    python benchmarks/bench_startup.py [--before PATH] [--headrace-args "..."]

The default model must be cached already (HEADRACE_CACHE_DIR keeps it where it is). --before:
a worktree of an older commit, measured the same way in the same run (each start alone).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from machine import metric_report
from servers import free_port

from headrace.model.source import cache_dir

_BODY = {
    "model": "SmolLM2-135M-Instruct",
    "messages": [{"role": "user", "content": "Hello!"}],
    "max_tokens": 1,
}
_TIMEOUT_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a worktree of the commit to compare with")
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    args = parser.parse_args()
    flags = shlex.split(args.headrace_args)
    rows = []
    sources: list[tuple[str, Path | None]] = [("this commit", None)]
    if args.before is not None:
        sources.insert(0, ("before", args.before))
    for name, source in sources:
        with tempfile.TemporaryDirectory() as caches:
            for cache in ("empty", "warm"):
                first, compiled = _start(Path(caches), flags, source)
                rows.append((f"{name}, {cache} compile cache", f"{first:.1f} / {compiled:.1f}"))
    print(
        metric_report(
            "seconds from the process's start to the first token / to the compiled decode step",
            rows,
        )
    )


def _start(caches: Path, flags: list[str], source: Path | None) -> tuple[float, float]:
    """Starts a server with its compile caches under `caches`; seconds to its first token and
    to its compiled decode step."""
    port = free_port()
    env = {
        **os.environ,
        "HEADRACE_CACHE_DIR": str(cache_dir()),  # the model where it is
        "XDG_CACHE_HOME": str(caches / "xdg"),  # the native kernels built again
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
        "XDG_DATA_HOME": str(caches / "data"),
    }
    if source is not None:  # run from it: `python -m` puts the working directory first
        env["PYTHONPATH"] = str(source)
    argv = [sys.executable, "-m", "headrace", "serve", "--port", str(port), *flags]
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        first = _until(process, started, lambda client: _answered(client, url))
        compiled = _until(process, started, lambda client: _compiled(client, url))
        return first, compiled
    finally:
        process.terminate()
        process.wait(timeout=60)


def _until(
    process: subprocess.Popen[bytes], started: float, done: Callable[[httpx.Client], bool]
) -> float:
    """Seconds from `started` until `done` holds, asked every 0.1 s."""
    with httpx.Client(timeout=120) as client:
        while time.perf_counter() - started < _TIMEOUT_S:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if done(client):
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
    raise TimeoutError("the server did not get there")


def _answered(client: httpx.Client, url: str) -> bool:
    return client.post(f"{url}/v1/chat/completions", json=_BODY).status_code == 200


def _compiled(client: httpx.Client, url: str) -> bool:
    """Whether the server's decode step is compiled (one that does not say was ready only once
    it was)."""
    health = client.get(f"{url}/health")
    return health.status_code == 200 and not health.json().get("compiling", False)


if __name__ == "__main__":
    main()
