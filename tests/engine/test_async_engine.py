import asyncio
import random
import threading
from contextlib import aclosing

import pytest

from headrace.engine.async_engine import AsyncEngine
from headrace.engine.llm_engine import LLMEngine, RequestOutput
from headrace.engine.outputs import TokenOutput
from tests.engine.factories import (
    make_engine,
    make_model,
    make_params,
    run_to_completion,
    wait_until_idle,
)


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


async def test_a_storm_of_cut_streams_leaves_nothing_behind() -> None:
    # Four sequences at a time and chunked prefill: streams are cut queued, prefilling, decoding.
    engine = AsyncEngine.build(lambda: make_engine(max_num_seqs=4, max_num_batched_tokens=32))
    engine.start()
    rng = random.Random(0)
    loop = asyncio.get_running_loop()

    async def consume(request_id: str, prompt: list[int], cut: int) -> None:
        """Read `cut` outputs, then leave."""
        stream = engine.generate(request_id, prompt, make_params(max_tokens=16))
        async with aclosing(stream):
            async for _ in stream:
                cut -= 1
                if cut == 0:
                    break

    try:
        tasks = []
        for i in range(200):
            prompt = [rng.randrange(1, 96) for _ in range(rng.randrange(1, 100))]
            task = asyncio.create_task(consume(f"r{i}", prompt, cut=rng.randrange(1, 17)))
            loop.call_later(rng.uniform(0, 0.5), task.cancel)  # or cut at a random moment
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        await wait_until_idle(engine)
        reference = make_engine()
        reference.add_request("r", [1, 2, 3], make_params(max_tokens=6))
        assert await collect(engine, "after", 6) == run_to_completion(reference)["r"]
    finally:
        engine.shutdown()


async def test_abort_all_ends_every_stream_with_abort() -> None:
    model = make_model(max_position_embeddings=4096)
    engine = AsyncEngine.build(lambda: make_engine(model, max_model_len=4096, max_num_seqs=2))
    engine.start()

    async def last_output(request_id: str) -> TokenOutput:
        outputs = engine.generate(request_id, [1, 2, 3], make_params(max_tokens=4000))
        return [out async for out in outputs][-1]

    try:
        # Two decode, one waits.
        streams = [asyncio.create_task(last_output(f"r{i}")) for i in range(3)]
        while engine.stats().running < 2:
            await asyncio.sleep(0.01)
        engine.abort_all()
        finishes = [out.finish_reason for out in await asyncio.gather(*streams)]
        assert finishes == ["abort"] * 3
        await wait_until_idle(engine)
    finally:
        engine.shutdown()
