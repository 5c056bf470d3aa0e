"""A real `headrace serve` process on the default model, on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from headrace.auth import KeyStore
from tests.e2e.browser import chromium  # noqa: F401  (a fixture, for the tests that use a browser)

# The guide's model names, all served by the default model.
MODEL_NAMES = ("SmolLM2-135M-Instruct", "Llama-3.3-70B-Instruct", "gpt-4.1")
API_KEY = "sk-headrace-e2e"
# Long enough for the guide's prompts, short enough to bound a rambling answer.
MAX_MODEL_LEN = 768
# The first run fetches the default model (about 93 MB) before it can start.
START_TIMEOUT_S = 600


@dataclass(frozen=True)
class Server:
    # http://127.0.0.1:PORT
    url: str
    # The static key the server accepts.
    api_key: str
    # The key store it also checks keys against; `headrace keys --key-store` adds to it.
    key_store: Path
    # Where the server's output goes.
    log: Path
    # Its process id.
    pid: int

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def env(self) -> dict[str, str]:
        """The environment the guide's snippets run in."""
        return {**os.environ, "OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key}

    def sdk(self, key: str | None = None) -> openai.OpenAI:
        """The real OpenAI client on the server, with `key` (default: the static key), no
        retries."""
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.api_key, max_retries=0)

    def health(self) -> dict[str, object]:
        return httpx.get(f"{self.url}/health", timeout=10).json()  # type: ignore[no-any-return]


def stream_greedy(server: Server, content: str, max_tokens: int) -> list[ChatCompletionChunk]:
    """The greedy streamed answer to one user message, through the real SDK."""
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)
    stream = client.chat.completions.create(
        model=MODEL_NAMES[0],
        messages=[{"role": "user", "content": content}],
        stream=True,
        max_tokens=max_tokens,
        temperature=0,
    )
    return list(stream)


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    log_dir: Path,
    *flags: str,
    data_dir: Path | None = None,
    keys: bool = True,
    compiled: bool = True,
) -> Iterator[Server]:
    """`headrace serve` on the default model with the guide's names, the key (keys=False: no
    key at all, open to any), `data_dir` (by default one of its own, log_dir/data) and `flags`;
    yielded once its decode step is compiled (compiled=False: as soon as it answers)."""
    port = _free_port()
    log = log_dir / "server.log"
    key_store = log_dir / "keys.sqlite3"
    env = dict(os.environ)
    key_flags: list[str] = []
    if keys:
        KeyStore(key_store).close()  # empty: the keys tests add theirs while it serves
        key_flags = ["--api-key", API_KEY, "--key-store", str(key_store)]
    else:  # no key from the environment or a default key store either
        env.pop("HEADRACE_API_KEYS", None)
        env.pop("HEADRACE_KEY_STORE", None)
        env["XDG_DATA_HOME"] = str(log_dir)
    command = [
        sys.executable, "-m", "headrace", "serve", "--port", str(port),
        "--served-model-name", *MODEL_NAMES, "--max-model-len", str(MAX_MODEL_LEN),
        *key_flags, "--data-dir", str(data_dir or log_dir / "data"), *flags,
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(
        url=f"http://127.0.0.1:{port}",
        api_key=API_KEY,
        key_store=key_store,
        log=log,
        pid=process.pid,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server did not start in {START_TIMEOUT_S} s:\n{log.read_text()}")
            try:
                # It serves while it compiles: wait, so that every test meets one engine.
                if not server.health()["compiling"] or not compiled:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def node_check(server: Server, script: str, **env: str) -> Any:
    """Runs tests/e2e/node/checks/`script` with Node on `server` (and `env`); the JSON it
    prints."""
    done = subprocess.run(
        ["node", f"checks/{script}"],
        cwd=Path(__file__).parent / "node",
        env={**server.env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as server:
        yield server
