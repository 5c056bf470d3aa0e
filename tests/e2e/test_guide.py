"""Every snippet of the streaming guide, run verbatim against the real server."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Server
from tests.schema import validate

HERE = Path(__file__).parent
NODE = HERE / "node"
pytestmark = pytest.mark.e2e


def run(command: list[str], server: Server, cwd: Path = HERE) -> str:
    done = subprocess.run(command, cwd=cwd, env=server.env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    # Decoded as it is: text=True would turn a "\r\n" the model wrote into "\n", one character
    # fewer than the snippets count.
    return done.stdout.decode()


def test_basic_streaming_python(server: Server) -> None:
    out = run([sys.executable, "snippets/basic_streaming.py"], server)
    assert out.strip()


def test_collect_full_response_python(server: Server) -> None:
    out = run([sys.executable, "snippets/collect_full_response.py"], server)
    text, _, tail = out.rpartition("\n\nTotal length: ")
    assert tail == f"{len(text)} characters\n"
    assert text.strip()


def test_stream_options_python(server: Server) -> None:
    out = run([sys.executable, "snippets/stream_options.py"], server)
    line = out.strip().splitlines()[-1]
    assert line.startswith("Tokens — prompt: ")
    counts = [int(part.split(": ")[1]) for part in line.removeprefix("Tokens — ").split(", ")]
    prompt, completion, total = counts
    assert prompt > 0 and completion > 0 and total == prompt + completion


def test_error_handling_python(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The snippet only defines stream_with_retry: run it verbatim, then call what it defined.
    run([sys.executable, "snippets/error_handling.py"], server)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(HERE / "snippets/error_handling.py"))
    reply = namespace["stream_with_retry"]([{"role": "user", "content": "Say hello"}])
    assert isinstance(reply, str) and reply


def test_basic_streaming_curl(server: Server) -> None:
    out = run(["bash", "snippets/basic_streaming.sh"], server)
    events = [line for line in out.split("\n\n") if line.strip()]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).strip()


def test_basic_streaming_node(server: Server) -> None:
    out = run(["node", "basic_streaming.mjs"], server, cwd=NODE)
    assert out.strip()


def test_collect_full_response_node(server: Server) -> None:
    out = run(["node", "collect_full_response.mjs"], server, cwd=NODE)
    text, _, tail = out.rpartition("\n\nTotal length: ")
    utf16_length = len(text.encode("utf-16-le")) // 2  # what JavaScript's .length counts
    assert tail == f"{utf16_length} characters\n"
    assert text.strip()
