"""`--quantization int8` serves the default model end to end through the real SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MODEL_NAMES, Server, running_server
from tests.schema import validate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def int8_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir: Path = tmp_path_factory.mktemp("int8")
    with running_server(log_dir, "--quantization", "int8") as server:
        yield server


def test_int8_weights_answer_the_capital_of_france(int8_server: Server) -> None:
    client = openai.OpenAI(base_url=int8_server.base_url, api_key=int8_server.api_key)
    stream = client.chat.completions.create(
        model=MODEL_NAMES[0],
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True,
        max_tokens=24,
        temperature=0,
    )
    chunks = list(stream)
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert "int8" in int8_server.log.read_text()
