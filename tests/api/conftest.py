from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes import FakeEngine, make_app, make_client


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def client(engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(make_app(engine)) as client:
        yield client
