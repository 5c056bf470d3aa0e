from headrace.engine.request import RequestStatus
from tests.engine.factories import make_request, make_scheduler


def computed(scheduler_output: object) -> None:
    """Advance requests as the engine would after a step."""
    for chunk in scheduler_output.prefills:  # type: ignore[attr-defined]
        chunk.request.num_computed_tokens += chunk.num_tokens
    for request in scheduler_output.decodes:  # type: ignore[attr-defined]
        request.num_computed_tokens += 1
        request.output_token_ids.append(0)


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


def test_finish_frees_the_slot_for_the_next_request() -> None:
    scheduler = make_scheduler(max_num_seqs=1, max_num_batched_tokens=64)
    first, second = make_request("1"), make_request("2")
    scheduler.add(first)
    scheduler.add(second)
    computed(scheduler.schedule())
    scheduler.finish(first)
    assert first.status is RequestStatus.FINISHED and first.slot is None
    step = scheduler.schedule()
    assert [c.request for c in step.prefills] == [second]


def test_budget_spent_by_decodes_admits_nothing() -> None:
    scheduler = make_scheduler(max_num_seqs=4, max_num_batched_tokens=4, num_slots=8)
    for i in range(4):
        scheduler.add(make_request(str(i), prompt_len=1))
    computed(scheduler.schedule())
    late = make_request("late")
    scheduler.add(late)
    step = scheduler.schedule()
    assert len(step.decodes) == 4 and step.prefills == []
