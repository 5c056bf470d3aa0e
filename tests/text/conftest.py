from __future__ import annotations

from pathlib import Path

import pytest

from headrace.text import Tokenizer
from tests.text.factories import make_tokenizer_dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_path(make_tokenizer_dir(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def smollm_tokenizer(default_model_path: Path) -> Tokenizer:
    return Tokenizer.from_path(default_model_path)


@pytest.fixture(scope="session")
def special_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The tiny tokenizer, with Mistral's and Llama's tool-call markers as special tokens."""
    specials = ["[TOOL_CALLS]", "[ARGS]", "<|python_tag|>"]
    path = make_tokenizer_dir(tmp_path_factory.mktemp("special"), extra_special=specials)
    return Tokenizer.from_path(path)
