from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from headrace.batch import FileStore
from headrace.text import Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.batch.factories import make_files
from tests.fakes import FakeEngine, make_app, make_client
from tests.text.factories import make_tokenizer_dir


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def client(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(make_app(engine)) as client:
        yield client


@pytest.fixture(scope="session")
def grammars(tmp_path_factory: pytest.TempPathFactory) -> GrammarCompiler:
    """Real grammars, over a tiny real tokenizer (the fake engine ignores them anyway)."""
    tokenizer = Tokenizer.from_path(make_tokenizer_dir(tmp_path_factory.mktemp("tokenizer")))
    return GrammarCompiler(tokenizer)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileStore]:
    """A file store in the test's own data directory."""
    files = make_files(tmp_path / "data")
    yield files
    files.store.close()
