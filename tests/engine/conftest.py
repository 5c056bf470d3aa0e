"""Fixtures for engine tests that constrain generation with a grammar."""

from __future__ import annotations

import pytest

from headrace.text import Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.text.factories import make_tokenizer_dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The tiny real tokenizer of tests/text/factories.py."""
    return Tokenizer.from_path(make_tokenizer_dir(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tiny_compiler(tiny_tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tiny_tokenizer)
