"""`--quantization int8` serves the default model end to end through the real SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, running_server, stream_greedy, streamed_text
from tests.schema import validate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def int8_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir: Path = tmp_path_factory.mktemp("int8")
    with running_server(log_dir, "--quantization", "int8") as server:
        yield server


def test_int8_weights_answer_the_capital_of_france(int8_server: Server) -> None:
    chunks = stream_greedy(int8_server, "What is the capital of France?", max_tokens=24)
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert "Paris" in streamed_text(chunks)
    log = int8_server.log.read_text()
    assert "int8" in log
    assert "compiled the decode step" in log
