from headrace.engine.request import RequestStatus
from tests.engine.factories import computed, make_request, make_scheduler


def test_long_prompt_is_chunked_while_running_streams_keep_decoding() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8)
    short = make_request("short", prompt_len=3)
    scheduler.add(short)
    computed(scheduler.schedule())  # short's prompt, whole
    short.output_token_ids.append(0)

    long = make_request("long", prompt_len=20)
    scheduler.add(long)
    chunks = []
    while long.is_prefilling:
        step = scheduler.schedule()
        assert step.decodes == [short]  # the running stream decodes every step
        chunks += [c.num_tokens for c in step.prefills]
        computed(step)
    assert chunks == [7, 7, 6]


def test_admission_stops_at_max_num_seqs() -> None:
    scheduler = make_scheduler(max_num_seqs=2, max_num_batched_tokens=64)
    requests = [make_request(str(i)) for i in range(3)]
    for request in requests:
        scheduler.add(request)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == requests[:2]
    assert list(scheduler.waiting) == requests[2:]
    assert requests[2].status is RequestStatus.WAITING


def test_finish_frees_the_blocks_for_the_next_request() -> None:
    scheduler = make_scheduler(max_num_seqs=1, max_num_batched_tokens=64)
    first, second = make_request("1"), make_request("2")
    scheduler.add(first)
    scheduler.add(second)
    computed(scheduler.schedule())
    scheduler.finish(first)
    assert first.status is RequestStatus.FINISHED and first.block_ids == []
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [second]


def test_budget_spent_by_decodes_admits_nothing() -> None:
    scheduler = make_scheduler(max_num_seqs=4, max_num_batched_tokens=4)
    for i in range(4):
        scheduler.add(make_request(str(i), prompt_len=1))
    computed(scheduler.schedule())
    late = make_request("late")
    scheduler.add(late)
    step = scheduler.schedule()
    assert len(step.decodes) == 4 and step.prefills == []


def test_admission_waits_for_blocks() -> None:
    # 7 usable blocks of 8, one kept back while others run.
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=8)
    first, second = make_request("1", prompt_len=30), make_request("2", prompt_len=30)
    scheduler.add(first)
    scheduler.add(second)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [first]  # 4 blocks; 3 left, minus the reserve
    assert list(scheduler.waiting) == [second]
    computed(step)
    scheduler.finish(first)
    assert [c.request for c in scheduler.schedule().prefills] == [second]


def test_a_decode_short_of_blocks_preempts_the_latest_admitted() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=5)  # 4 usable blocks of 8
    early, late = make_request("early", prompt_len=16), make_request("late", prompt_len=8)
    scheduler.add(early)
    scheduler.add(late)
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [early, late]  # 2 blocks + 1 block
    computed(step)
    early.output_token_ids.append(0)
    late.output_token_ids.append(0)
    # Both prompts filled their blocks: early takes the last free one, late finds none.
    step = scheduler.schedule()
    assert step.decodes == [early] and len(early.block_ids) == 3
    assert list(scheduler.waiting) == [late] and late.block_ids == []
    assert late.status is RequestStatus.WAITING and late.num_computed_tokens == 0
    assert late.num_preemptions == 1 and scheduler.num_preemptions == 1


def test_the_latest_admitted_makes_room_for_an_earlier_one() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=5)  # 4 usable blocks of 8
    early, late = make_request("early", prompt_len=16), make_request("late", prompt_len=4)
    scheduler.add(early)
    scheduler.add(late)
    computed(scheduler.schedule())  # early: 2 blocks, late: 1
    early.output_token_ids.append(0)
    late.output_token_ids.append(0)
    scheduler.blocks.pool.allocate(1)  # the last free block, held elsewhere
    step = scheduler.schedule()  # early needs a 3rd block; late still has room in its first
    assert step.decodes == [early] and len(early.block_ids) == 3
    assert list(scheduler.waiting) == [late]


def test_a_preempted_request_recomputes_its_output_too() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=16)
    request = make_request("r", prompt_len=5)
    scheduler.add(request)
    computed(scheduler.schedule())
    request.output_token_ids += [1, 2, 3]
    request.num_computed_tokens = 7
    scheduler._preempt(request)
    step = scheduler.schedule()
    assert [(c.request, c.num_tokens) for c in step.prefills] == [(request, 8)]
    assert request.num_cached_tokens == 0  # counted at its first admission only


def test_a_request_alone_preempts_nothing_but_itself_never() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=64, num_blocks=3)  # 2 usable blocks of 8
    request = make_request("r", prompt_len=15)
    scheduler.add(request)
    step = scheduler.schedule()
    computed(step)
    request.output_token_ids.append(0)
    assert scheduler.schedule().decodes == [request]
