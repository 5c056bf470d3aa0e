"""Servers under test as child processes on loopback, and their /health watched while they work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
from llama_cpp import peers_dir

__all__ = ["HealthPoller", "ServerExited", "ServerProcess", "free_port", "headrace_server"]

# How often a starting server's /health is asked whether it is ready.
_READY_POLL_S = 0.25
# Grace given to a server between SIGTERM and SIGKILL.
_STOP_GRACE_S = 30


def headrace_server(
    name: str, flags: Sequence[str], ready_timeout_s: float = 600, source: Path | None = None
) -> ServerProcess:
    """`headrace serve` with `flags` on a free loopback port, its log at peers/logs/NAME.log;
    `source`: another checkout of headrace to serve from (an older commit), else this one."""
    port = free_port()
    argv = [sys.executable, "-m", "headrace", "serve", "--port", str(port), *flags]
    log_path = peers_dir() / "logs" / f"{name}.log"
    if source is None:
        return ServerProcess("headrace", argv, port, log_path, ready_timeout_s)
    # Run from the checkout: `python -m` puts the working directory first on sys.path, ahead
    # of PYTHONPATH, so started from this one it would serve this checkout's code.
    env = {**os.environ, "PYTHONPATH": str(source)}
    return ServerProcess("headrace", argv, port, log_path, ready_timeout_s, env, cwd=source)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerExited(RuntimeError):
    """The server process ended before it was ready."""

    def __init__(self, name: str, returncode: int, log_tail: str) -> None:
        super().__init__(f"{name} exited with status {returncode}:\n{log_tail}")
        self.returncode = returncode
        self.log_tail = log_tail


class ServerProcess:
    """Starts `argv` with its output in `log_path`, waits for /health to answer 200, stops it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_path: Path,
        ready_timeout_s: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        # The child's environment; None: this process's.
        self.env = env
        # The child's working directory; None: this process's.
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        try:
            self._wait_ready(self.process)
        except BaseException:
            self._stop(self.process)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self._stop(self.process)

    @property
    def pid(self) -> int:
        """The running server's process id."""
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process.pid

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise ServerExited(self.name, process.returncode, self.log_tail())
                try:
                    health = client.get(f"{self.url}/health")
                    # headrace serves while it compiles its decode step: measure once compiled.
                    if health.status_code == 200 and not _compiling(health):
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(_READY_POLL_S)
        raise TimeoutError(f"{self.name} was not ready after {self.ready_timeout_s:.0f} s")

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])


class HealthPoller:
    """Times GET `path` (/health, unless told) every `interval_s` from a background thread while
    the block runs."""

    def __init__(self, url: str, interval_s: float, path: str = "/health") -> None:
        self.url = f"{url}{path}"
        self.interval_s = interval_s
        # Each poll's round trip, in milliseconds.
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="health-poller", daemon=True)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                sent = time.perf_counter()
                client.get(self.url).raise_for_status()
                elapsed = time.perf_counter() - sent
                self.latencies_ms.append(1000 * elapsed)
                self._stop.wait(max(0.0, self.interval_s - elapsed))


def _compiling(health: httpx.Response) -> bool:
    """Whether a /health answer says the server still compiles (headrace's field; a peer's
    answer, JSON or not, never does)."""
    try:
        answer = health.json()
    except ValueError:
        return False
    return isinstance(answer, dict) and bool(answer.get("compiling"))
