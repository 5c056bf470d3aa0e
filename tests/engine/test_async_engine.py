import asyncio
import threading

import pytest

from headrace.engine.async_engine import AsyncEngine
from headrace.engine.llm_engine import LLMEngine, RequestOutput
from tests.engine.factories import make_engine, make_model, make_params, run_to_completion


@pytest.fixture
async def engine():  # type: ignore[no-untyped-def]
    async_engine = AsyncEngine.build(make_engine)
    async_engine.start()
    yield async_engine
    async_engine.shutdown()


async def collect(engine: AsyncEngine, request_id: str, max_tokens: int) -> list[int]:
    tokens = []
    async for out in engine.generate(request_id, [1, 2, 3], make_params(max_tokens=max_tokens)):
        tokens += out.token_ids
    return tokens


async def test_concurrent_streams_match_the_sync_engine(engine: AsyncEngine) -> None:
    reference = make_engine()
    reference.add_request("r", [1, 2, 3], make_params(max_tokens=6))
    expected = run_to_completion(reference)["r"]
    results = await asyncio.gather(*(collect(engine, f"r{i}", 6) for i in range(3)))
    assert results == [expected] * 3
    assert engine.stats().running == 0


async def test_closing_the_stream_aborts_the_request() -> None:
    model = make_model(max_position_embeddings=4096)
    engine = AsyncEngine.build(lambda: make_engine(model, max_model_len=4096))
    engine.start()
    stream = engine.generate("r", [1, 2, 3], make_params(max_tokens=100_000))
    await anext(stream)
    assert engine.stats().running == 1
    await stream.aclose()
    for _ in range(200):
        if engine.stats().running == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.stats().running == 0
    assert engine._engine.blocks.pool.num_used == 0
    engine.shutdown()


async def test_duplicate_request_id_is_refused(engine: AsyncEngine) -> None:
    stream = engine.generate("r", [1, 2, 3], make_params(max_tokens=50))
    await anext(stream)
    with pytest.raises(ValueError):
        await anext(engine.generate("r", [1], make_params()))
    await stream.aclose()


async def test_the_engine_is_built_and_stepped_on_one_thread() -> None:
    threads: set[int] = set()

    def build() -> LLMEngine:
        threads.add(threading.get_ident())
        engine = make_engine()
        step = engine.step

        def recorded_step() -> list[RequestOutput]:
            threads.add(threading.get_ident())
            return step()

        engine.step = recorded_step  # type: ignore[method-assign]
        return engine

    engine = AsyncEngine.build(build)
    engine.start()
    assert await collect(engine, "r", 3)
    engine.shutdown()
    assert len(threads) == 1 and threading.get_ident() not in threads
