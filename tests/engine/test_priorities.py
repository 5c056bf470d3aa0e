"""Batch requests run on the capacity interactive ones leave: admitted after them, prefilled with
the budget they leave, preempted before any of them, their tokens unchanged."""

import pytest
import torch

from headrace.engine.async_engine import AsyncEngine
from headrace.engine.kv_cache import bytes_per_token
from headrace.engine.llm_engine import LLMEngine
from headrace.engine.outputs import Priority, SamplingParams
from headrace.engine.request import Request, RequestStatus
from tests.engine.factories import (
    computed,
    make_engine,
    make_model,
    make_params,
    make_request,
    make_scheduler,
    run_to_completion,
)

BATCH = Priority.BATCH


def batch(request_id: str, prompt_len: int = 5) -> Request:
    return make_request(request_id, prompt_len, priority=BATCH)


def test_interactive_requests_are_admitted_first_each_priority_in_order() -> None:
    scheduler = make_scheduler(max_num_seqs=3, max_num_batched_tokens=64)
    b1, b2 = batch("b1"), batch("b2")
    i1, i2 = make_request("i1"), make_request("i2")
    for request in (b1, b2, i1, i2):
        scheduler.add(request)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [i1, i2]  # their step alone
    assert scheduler.waiting == [b1, b2]
    computed(step)
    step = scheduler.schedule()
    assert step.decodes == [i1, i2] and [c.request for c in step.prefills] == [b1]
    assert scheduler.waiting == [b2]


def test_a_step_computing_an_interactive_prompt_runs_no_batch_work() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    long = batch("long", prompt_len=20)
    decoding = batch("decoding", prompt_len=3)
    scheduler.add(decoding)
    computed(scheduler.schedule())
    scheduler.add(long)
    computed(scheduler.schedule())  # decoding decodes; 7 of long's 20 tokens
    short = make_request("short", prompt_len=5)
    scheduler.add(short)
    step = scheduler.schedule()
    assert step.decodes == [] and [(c.request, c.num_tokens) for c in step.prefills] == [(short, 5)]
    computed(step)
    step = scheduler.schedule()  # back: batch work in the budget the interactive decode leaves
    assert step.decodes == [short, decoding]
    assert [(c.request, c.num_tokens) for c in step.prefills] == [(long, 6)]


def test_no_batch_request_is_admitted_while_an_interactive_one_waits() -> None:
    # 8 usable blocks of 8: the first interactive request takes 5, the second needs 4.
    scheduler = make_scheduler(max_num_batched_tokens=128, num_blocks=9)
    first, second, late = make_request("1", 40), make_request("2", 30), batch("late", 3)
    for request in (first, second, late):
        scheduler.add(request)
    assert [c.request for c in scheduler.schedule().prefills] == [first]
    assert scheduler.waiting == [second, late]  # late would fit, but waits behind second


def test_a_decode_short_of_blocks_preempts_batch_work_before_a_later_interactive_one() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=5)  # 4 usable blocks of 8
    scheduler.add(background := batch("background", prompt_len=3))
    computed(scheduler.schedule())
    scheduler.add(i1 := make_request("i1", prompt_len=8))
    scheduler.add(i2 := make_request("i2", prompt_len=8))
    computed(scheduler.schedule())  # a block each; one left
    i1.output_token_ids.append(0)
    i2.output_token_ids.append(0)
    # i1 takes the last free block; i2, admitted last, takes background's.
    step = scheduler.schedule()
    assert step.decodes == [i1, i2]
    assert scheduler.waiting == [background] and background.status is RequestStatus.WAITING
    assert (background.num_preemptions, i1.num_preemptions, i2.num_preemptions) == (1, 0, 0)


def test_a_batch_request_short_of_blocks_never_preempts_an_interactive_one() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=5)  # 4 usable blocks of 8
    scheduler.add(background := batch("background", prompt_len=7))
    computed(scheduler.schedule())  # background: 1 block
    computed(scheduler.schedule())  # background decodes into its block
    scheduler.add(chat := make_request("chat", prompt_len=16))
    computed(scheduler.schedule())  # chat: 2 blocks; background, sitting out, has taken a second
    chat.output_token_ids.append(0)
    step = scheduler.schedule()  # both need a block: chat gets the last, background yields
    assert step.decodes == [chat] and len(chat.block_ids) == 3
    assert scheduler.waiting == [background] and chat.num_preemptions == 0


def test_an_interactive_request_is_admitted_by_preempting_the_latest_batch_one() -> None:
    # 8 usable blocks of 8; one kept back while others run.
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=9)
    b1, b2 = batch("b1", prompt_len=20), batch("b2", prompt_len=20)
    scheduler.add(b1)
    scheduler.add(b2)
    computed(scheduler.schedule())  # 3 blocks each: 2 left, 1 usable
    scheduler.add(chat := make_request("chat", prompt_len=16))  # needs 2
    step = scheduler.schedule()
    assert step.decodes == [] and [c.request for c in step.prefills] == [chat]  # b1 sits out
    assert scheduler.running == [b1, chat] and scheduler.waiting == [b2]
    assert b2.num_preemptions == 1 and b2.num_computed_tokens == 0 and b2.block_ids == []


def test_an_interactive_request_takes_a_batch_request_s_place_at_max_num_seqs() -> None:
    scheduler = make_scheduler(max_num_seqs=2, max_num_batched_tokens=64)
    b1, b2 = batch("b1"), batch("b2")
    scheduler.add(b1)
    scheduler.add(b2)
    computed(scheduler.schedule())
    scheduler.add(chat := make_request("chat"))
    step = scheduler.schedule()
    assert step.decodes == [] and [c.request for c in step.prefills] == [chat]  # b1 sits out
    assert scheduler.running == [b1, chat] and scheduler.waiting == [b2]


def test_batch_work_is_not_preempted_when_that_would_not_make_room() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=9)  # 8 usable blocks of 8
    big, background = make_request("big", prompt_len=38), batch("background", prompt_len=14)
    scheduler.add(big)
    scheduler.add(background)
    computed(scheduler.schedule())  # big's prompt alone: 5 blocks
    computed(scheduler.schedule())  # big decodes; background: 2 blocks; 1 left, kept back
    scheduler.add(chat := make_request("chat", prompt_len=24))  # 3 blocks; background frees 2
    scheduler.add(more := batch("more", prompt_len=1))
    step = scheduler.schedule()
    assert step.decodes == [big, background] and step.prefills == []
    assert scheduler.waiting == [chat, more] and scheduler.num_preemptions == 0


def test_samples_wait_for_their_leader_at_either_priority() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64)
    leader, follower = make_request("leader", 20), make_request("follower", 20)
    follower.leader = leader
    b_leader, b_follower = batch("b_leader", 12), batch("b_follower", 12)
    b_follower.leader = b_leader
    for request in (b_leader, b_follower, leader, follower):
        scheduler.add(request)
    step = scheduler.schedule()
    # The interactive follower waits for its leader's prompt, and batch work behind it.
    assert [c.request for c in step.prefills] == [leader]
    computed(step)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [follower]
    computed(step)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [b_leader]
    computed(step)
    assert [c.request for c in scheduler.schedule().prefills] == [b_follower]


def test_a_follower_at_another_priority_than_its_leader_does_not_wait() -> None:
    engine = make_engine()
    engine.add_request("leader", [1, 2, 3], make_params(max_tokens=2), priority=BATCH)
    engine.add_request("other", [1, 2, 3], make_params(max_tokens=2), after="leader")
    assert {out.request_id for out in engine.step()} == {"other"}  # and the leader sits out


def alone(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    engine.add_request("alone", prompt, params)
    return run_to_completion(engine)["alone"]


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 11}])
@pytest.mark.parametrize("short_of", ["seats", "blocks"])
def test_preempted_batch_work_finishes_with_the_tokens_it_gets_alone(
    sampling: dict[str, object], short_of: str
) -> None:
    model = make_model()
    if short_of == "seats":  # two places: the second chat takes the batch request's
        config: dict[str, object] = dict(max_num_seqs=2)
        chats = {f"chat{i}": [(5 * i + j) % 90 + 2 for j in range(6)] for i in range(2)}
    else:  # 19 usable blocks of 8: the chat grows to 15, the batch request to 7
        memory = 20 * 8 * bytes_per_token(model.config, torch.float32)
        config = dict(block_size=8, kv_cache_memory=memory)
        chats = {"chat": [(5 * j + 1) % 90 + 2 for j in range(100)]}
    prompt, params = [(3 * j) % 90 + 2 for j in range(11)], make_params(max_tokens=40, **sampling)
    engine = make_engine(model, **config)
    engine.add_request("batch", prompt, params, priority=BATCH)
    background = engine._requests["batch"]
    tokens = [t for _ in range(5) for out in engine.step() for t in out.output.token_ids]
    for request_id, chat in chats.items():
        engine.add_request(request_id, chat, make_params(max_tokens=20))
    admitted = [engine._requests[request_id] for request_id in chats]
    results = run_to_completion(engine)
    assert background.num_preemptions > 0
    assert [chat.num_preemptions for chat in admitted] == [0] * len(chats)
    assert tokens + results["batch"] == alone(make_engine(model), prompt, params)
    for request_id, chat in chats.items():
        assert results[request_id] == alone(make_engine(model), chat, make_params(max_tokens=20))
    assert engine.blocks.pool.num_used == 0


def test_stats_count_batch_requests_apart() -> None:
    engine = make_engine(max_num_seqs=2)
    engine.add_request("b1", [1, 2, 3], make_params(), priority=BATCH)
    engine.add_request("i1", [1, 2, 3], make_params())
    engine.add_request("b2", [1, 2, 3], make_params(), priority=BATCH)
    engine.add_request("b3", [1, 2, 3], make_params(), priority=BATCH)
    engine.step()  # i1's prompt alone
    assert (engine.stats().running, engine.stats().batch_waiting) == (1, 3)
    engine.step()  # i1 decodes, b1 is admitted
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 2)
    assert (stats.batch_running, stats.batch_waiting) == (1, 2)


async def test_the_async_engine_passes_the_priority_on() -> None:
    engine = AsyncEngine.build(make_engine)
    engine.start()
    try:
        params = make_params(max_tokens=100)
        stream = engine.generate("b", [1, 2, 3], params, priority=BATCH)
        await anext(stream)
        assert engine.stats().batch_running == 1
        assert engine._engine._requests["b"].priority is BATCH
        await stream.aclose()
    finally:
        engine.shutdown()
