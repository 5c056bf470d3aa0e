"""The decode step is compiled by default; `--enforce-eager` serves the same tokens without it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, running_server, stream_greedy, streamed_text

pytestmark = pytest.mark.e2e

COMPILED = "compiled the decode step"


def greedy_text(server: Server) -> str:
    return streamed_text(stream_greedy(server, "Name three rivers of Europe and their seas.", 48))


def test_an_eager_server_answers_as_the_compiled_one(tmp_path: Path) -> None:
    # Inductor's fused RMSNorm may round an element to the neighbouring bfloat16 where eager
    # does not (docs/quantization.md): on 16-bit weights this prompt meets no such rounding, on
    # the default Q4_1 weights it does, and the greedy texts part after 40 tokens.
    (tmp_path / "compiled").mkdir()
    (tmp_path / "eager").mkdir()
    with running_server(tmp_path / "compiled", "--quantization", "none") as server:
        assert COMPILED in server.log.read_text()
        compiled = greedy_text(server)
    with running_server(tmp_path / "eager", "--quantization", "none", "--enforce-eager") as eager:
        assert greedy_text(eager) == compiled
        assert COMPILED not in eager.log.read_text()


def test_a_fresh_server_answers_while_it_compiles(tmp_path: Path) -> None:
    """Served eagerly until the compiled step is ready, then compiled: the same greedy text.

    With a warm compile cache the step compiles in seconds, so the first answer may already be
    compiled on a fast machine; what must hold is that the server answers before it has
    compiled, and the same tokens either side."""
    # No prefix cache: a cached prompt is computed in another shape, and rounds apart.
    flags = ("--quantization", "none", "--no-prefix-caching")
    with running_server(tmp_path, *flags, compiled=False) as server:
        compiling = server.health()["compiling"]
        first = greedy_text(server)
        deadline = time.monotonic() + 300
        while server.health()["compiling"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.health()["compiling"]
        assert greedy_text(server) == first
        log = server.log.read_text()
    if not compiling:
        pytest.skip("the decode step compiled before the server's first answer")
    assert log.index("serving ") < log.index(COMPILED)  # it served before it had compiled
