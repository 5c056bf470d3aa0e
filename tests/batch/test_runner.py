"""The batch runner on a fake engine: the lifecycle, results in input order, a request failing
alone, resuming after a crash, cancel, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from headrace.batch import (
    COMPLETION_WINDOW_SECONDS,
    BatchStore,
    FileStore,
    LineResult,
    LineUsage,
)
from headrace.batch.runner import BatchRunner
from headrace.engine.outputs import Priority
from headrace.errors import RateLimitError
from headrace.serving import dump, parse_chat_request
from tests.batch.factories import (
    make_batch,
    make_batches,
    make_endpoints,
    make_files,
    make_runner,
    read_file,
    request_line,
)
from tests.fakes import REPLY, FakeClock, FakeEngine, make_chat_service
from tests.schema import validate


class Crash(Exception):
    """The process dying."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def batches(tmp_path: Path, clock: FakeClock) -> Iterator[BatchStore]:
    files = make_files(tmp_path / "data", clock)
    yield make_batches(files)
    files.store.close()


async def test_a_batch_runs_to_completed_with_results_in_input_order(
    batches: BatchStore, clock: FakeClock
) -> None:
    engine = FakeEngine()
    content = b"".join(request_line(f"r{i}", max_tokens=3, temperature=0) for i in range(6))
    batch = await make_batch(batches, content)
    assert batch.status == "validating"
    assert batch.expires_at == batch.created_at + COMPLETION_WINDOW_SECONDS
    clock.advance(5)
    await make_runner(batches, engine, concurrency=2).run_pending()
    done = batches.get(None, batch.id)
    validate(orjson.loads(done.dump()), "Batch")
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 6, "completed": 6, "failed": 0}
    assert done.in_progress_at == done.finalizing_at == done.completed_at == batch.created_at + 5
    assert done.error_file_id is None
    output = read_file(batches.files, None, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"r{i}" for i in range(6)]
    for line in output:
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"].startswith("req_")
        validate(line["response"]["body"], "CreateChatCompletionResponse")
        assert line["response"]["body"]["choices"][0]["message"]["content"] == REPLY[:3]
    assert set(engine.priorities.values()) == {Priority.BATCH}
    assert not batches.input_path(batch.id).exists()
    assert batches.files.get(None, done.output_file_id).purpose == "batch_output"  # type: ignore[arg-type]


async def test_a_body_is_exactly_what_the_same_request_gets_online(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a", max_tokens=5, temperature=0))
    await make_runner(batches).run_pending()
    (line,) = read_file(batches.files, None, batches.get(None, batch.id).output_file_id)
    chat = make_chat_service()
    online = await chat.complete(
        chat.prepare(
            parse_chat_request(
                orjson.dumps(
                    {
                        "model": "test-model",
                        "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 5,
                        "temperature": 0,
                    }
                )
            )
        )
    )
    expected = orjson.loads(dump(online))
    body = line["response"]["body"]
    assert body.keys() == expected.keys()
    for volatile in ("id", "created"):
        body.pop(volatile), expected.pop(volatile)
    assert body == expected


async def test_a_bad_request_fails_alone_with_its_online_status(batches: BatchStore) -> None:
    content = (
        request_line("ok")
        + request_line("unknown", model="no-such-model")
        + request_line("bad", temperature=9)
        + request_line("streamed", stream=True)
        + request_line("ok2")
    )
    batch = await make_batch(batches, content)
    await make_runner(batches).run_pending()
    done = batches.get(None, batch.id)
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}
    output = read_file(batches.files, None, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["ok", "ok2"]
    errors = read_file(batches.files, None, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["unknown", "bad", "streamed"]
    statuses = [line["response"]["status_code"] for line in errors]
    assert statuses == [404, 400, 400]
    for line in errors:
        assert line["error"] is None
        validate(line["response"]["body"], "ErrorResponse")
    assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"
    assert errors[2]["response"]["body"]["error"]["param"] == "stream"


@pytest.mark.parametrize(
    ("content", "code", "line"),
    [
        (b"", "empty_file", None),
        (b"\n\n", "empty_file", None),
        (b"not json\n", "invalid_json_line", 1),
        (b"[1]\n", "invalid_json_line", 1),
        (request_line("a") + request_line("a"), "duplicate_custom_id", 2),
        (request_line("a", url="/v1/completions"), "invalid_request", 1),
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}',
            "missing_required_parameter",
            1,
        ),
        (
            b'{"custom_id": 1, "method": "POST", "url": "/v1/chat/completions", "body": {}}',
            "invalid_request",
            1,
        ),
        (
            b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
            "invalid_request",
            1,
        ),
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": []}',
            "invalid_request",
            1,
        ),
    ],
)
async def test_a_bad_file_fails_the_batch(
    batches: BatchStore, content: bytes, code: str, line: int | None
) -> None:
    engine = FakeEngine()
    batch = await make_batch(batches, request_line("first") + content if line else content)
    await make_runner(batches, engine).run_pending()
    failed = batches.get(None, batch.id)
    validate(orjson.loads(failed.dump()), "Batch")
    assert failed.status == "failed"
    assert failed.failed_at is not None
    assert failed.errors is not None
    (error,) = failed.errors.data
    assert error.code == code
    assert error.line == (line + 1 if line else None)
    assert failed.output_file_id is None and failed.error_file_id is None
    assert engine.prompts == {}


async def test_too_many_requests_fail_the_batch(
    batches: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("headrace.batch.lines.MAX_REQUESTS", 2)
    batch = await make_batch(batches, b"".join(request_line(f"r{i}") for i in range(3)))
    await make_runner(batches).run_pending()
    failed = batches.get(None, batch.id)
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data[0].code == "too_many_requests"


async def test_a_crashed_batch_resumes_running_only_the_lines_without_a_result(
    batches: BatchStore,
) -> None:
    batch = await make_batch(batches, b"".join(request_line(f"r{i}") for i in range(5)))
    # What a crashed run left: in progress, lines 2 and 4 done.
    batches.start(batch.id, 5)
    for line in (2, 4):
        output = f'{{"id": "batch_req_x{line}", "custom_id": "r{line - 1}", "before": true}}'
        assert batches.record(batch.id, {line: LineResult("completed", output)}) == 1
    again = LineResult("completed", "again", LineUsage("m", 5, 0, 5))
    assert batches.record(batch.id, {2: again}) == 0  # kept once, counted once
    assert batches.get(None, batch.id).usage.total_tokens == 0
    engine = FakeEngine()
    await make_runner(batches, engine).run_pending()
    done = batches.get(None, batch.id)
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    assert len(engine.prompts) == 3
    output = read_file(batches.files, None, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["r0", "r1", "r2", "r3", "r4"]
    assert [line.get("before", False) for line in output] == [False, True, False, True, False]


async def test_a_batch_left_finalizing_is_finished(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a"))
    batches.start(batch.id, 1)
    batches.record(batch.id, {1: LineResult("completed", '{"custom_id": "a"}')})
    batches.finalize(batch.id)
    engine = FakeEngine()
    await make_runner(batches, engine).run_pending()
    done = batches.get(None, batch.id)
    assert done.status == "completed"
    assert engine.prompts == {}
    assert read_file(batches.files, None, done.output_file_id) == [{"custom_id": "a"}]


async def test_a_crash_while_ending_leaves_no_file_the_batch_does_not_name(
    batches: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = await make_batch(batches, request_line("a") + request_line("b", model="nope"))

    def crash(*args: object) -> None:
        raise Crash  # the process dies between placing the files and ending

    with monkeypatch.context() as patch:
        patch.setattr(batches, "finish", crash)
        with pytest.raises(Crash):
            await make_runner(batches).run_pending()
    assert batches.get(None, batch.id).status == "finalizing"
    # Restarted: the stores opened again on the same database, strays removed.
    restarted = make_batches(FileStore(batches.store, batches.files.clock))
    await make_runner(restarted).run_pending()
    done = restarted.get(None, batch.id)
    assert done.status == "completed"
    kept = {file.id for file in restarted.files.list(None).data}
    assert kept == {batch.input_file_id, done.output_file_id, done.error_file_id}
    assert sorted(path.name for path in restarted.files.directory.iterdir()) == sorted(kept)


async def test_cancel_mid_run_aborts_what_runs_and_keeps_what_finished(
    batches: BatchStore,
) -> None:
    engine = FakeEngine(step_delay=0.01)
    content = request_line("quick", max_tokens=1) + b"".join(
        request_line(f"slow{i}") for i in range(6)
    )
    batch = await make_batch(batches, content)
    runner = make_runner(batches, engine, concurrency=3)
    task = asyncio.create_task(runner.run_pending())
    while batches.get(None, batch.id).request_counts.completed < 1:
        await asyncio.sleep(0.005)
    cancelling = batches.cancel(None, batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    runner.cancel(batch.id)
    await asyncio.wait_for(task, 5)
    cancelled = batches.get(None, batch.id)
    validate(orjson.loads(cancelled.dump()), "Batch")
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert engine.closed_early  # in-flight requests were aborted
    assert engine.running == 0
    output = read_file(batches.files, None, cancelled.output_file_id)
    assert [line["custom_id"] for line in output][:1] == ["quick"]
    assert len(output) == cancelled.request_counts.completed < 7
    assert batches.cancel(None, batch.id).status == "cancelled"  # again: unchanged


async def test_a_batch_cancelled_before_it_ran_ends_cancelled(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a"))
    batches.cancel(None, batch.id)
    engine = FakeEngine()
    await make_runner(batches, engine).run_pending()
    cancelled = batches.get(None, batch.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_file_id is None and cancelled.error_file_id is None
    assert engine.prompts == {}


async def test_a_finished_batch_cannot_be_cancelled(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a"))
    await make_runner(batches).run_pending()
    with pytest.raises(Exception, match="Cannot cancel a batch with status 'completed'"):
        batches.cancel(None, batch.id)


async def test_past_its_window_what_has_not_run_expires(
    batches: BatchStore, clock: FakeClock
) -> None:
    batch = await make_batch(batches, b"".join(request_line(f"r{i}") for i in range(3)))
    batches.start(batch.id, 3)
    batches.record(batch.id, {2: LineResult("completed", '{"custom_id": "r1"}')})
    clock.advance(COMPLETION_WINDOW_SECONDS)
    engine = FakeEngine()
    await make_runner(batches, engine).run_pending()
    expired = batches.get(None, batch.id)
    validate(orjson.loads(expired.dump()), "Batch")
    assert expired.status == "expired"
    assert expired.expired_at == batch.created_at + COMPLETION_WINDOW_SECONDS
    assert expired.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}
    assert engine.prompts == {}
    assert read_file(batches.files, None, expired.output_file_id) == [{"custom_id": "r1"}]
    errors = read_file(batches.files, None, expired.error_file_id)
    assert [line["custom_id"] for line in errors] == ["r0", "r2"]
    for line in errors:
        assert line["response"] is None
        assert line["error"]["code"] == "batch_expired"


async def test_the_runner_task_wakes_for_a_new_batch(batches: BatchStore) -> None:
    runner = make_runner(batches)
    task = asyncio.create_task(runner.run())
    try:
        batch = await make_batch(batches, request_line("a"))
        runner.wake()
        for _ in range(500):
            if batches.get(None, batch.id).status == "completed":
                break
            await asyncio.sleep(0.01)
        assert batches.get(None, batch.id).status == "completed"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_batches_of_other_owners_are_unknown(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a"), owner="key-a")
    assert batches.get("key-a", batch.id).id == batch.id
    with pytest.raises(Exception, match="No batch found"):
        batches.get("key-b", batch.id)
    with pytest.raises(Exception, match="No such File object"):
        batches.create("key-b", batch.input_file_id, "/v1/chat/completions", None)
    assert batches.list("key-b").data == []
    await make_runner(batches).run_pending()
    done = batches.get("key-a", batch.id)
    assert done.output_file_id is not None
    assert batches.files.get("key-a", done.output_file_id).purpose == "batch_output"


async def test_deleting_the_input_file_does_not_stop_its_batch(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a"))
    await batches.files.delete(None, batch.input_file_id)
    await make_runner(batches).run_pending()
    assert batches.get(None, batch.id).status == "completed"


async def test_a_batch_whose_input_is_gone_fails_rather_than_blocking_the_rest(
    batches: BatchStore,
) -> None:
    gone = await make_batch(batches, request_line("a"))
    batches.start(gone.id, 1)
    batches.input_path(gone.id).unlink()
    after = await make_batch(batches, request_line("b"))
    await make_runner(batches).run_pending()
    failed = batches.get(None, gone.id)
    assert failed.status == "failed"
    assert failed.errors is not None and failed.errors.data[0].code == "missing_input"
    assert batches.get(None, after.id).status == "completed"


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not in 5 s")


async def test_a_batch_held_back_by_its_owners_limit_holds_back_no_other(
    batches: BatchStore,
) -> None:
    held = await make_batch(batches, request_line("a") + request_line("b"), owner="key-slow")
    later = await make_batch(batches, request_line("c"), owner="key-fast")
    metered: list[tuple[str | None, int]] = []
    never = asyncio.Event()

    async def meter(owner: str | None, tokens: int) -> None:
        metered.append((owner, tokens))
        if owner == "key-slow":
            await never.wait()  # its tokens per minute are spent

    endpoints = make_endpoints(concurrency=1, meter=meter)
    task = asyncio.create_task(BatchRunner(batches, endpoints, concurrency=2).run())
    try:
        await until(lambda: batches.get("key-fast", later.id).status == "completed")
        assert batches.get("key-slow", held.id).request_counts.completed == 0
        assert {owner for owner, _ in metered} == {"key-slow", "key-fast"}
        assert all(tokens > 0 for _, tokens in metered)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_request_larger_than_its_owners_whole_limit_fails_alone_with_429(
    batches: BatchStore,
) -> None:
    async def meter(owner: str | None, tokens: int) -> None:
        if tokens > 60:
            raise RateLimitError("Request too large", limit="batch_tokens", should_retry=False)

    content = request_line("small", max_tokens=5) + request_line("large", max_tokens=64)
    batch = await make_batch(batches, content, owner="key")
    endpoints = make_endpoints(meter=meter)
    await BatchRunner(batches, endpoints).run_pending()
    done = batches.get("key", batch.id)
    assert done.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
    (error,) = read_file(batches.files, "key", done.error_file_id)
    assert error["custom_id"] == "large" and error["response"]["status_code"] == 429
    assert error["response"]["body"]["error"]["type"] == "batch_tokens"


async def test_a_batch_counts_the_tokens_of_its_completed_requests(batches: BatchStore) -> None:
    batch = await make_batch(batches, request_line("a") + request_line("b"))
    batches.start(batch.id, 3)
    batches.record(
        batch.id,
        {
            1: LineResult("completed", "{}", LineUsage("tiny", 10, 4, 3)),
            2: LineResult("failed", "{}"),
        },
    )
    batches.record(batch.id, {3: LineResult("completed", "{}", LineUsage("alias", 7, 0, 2))})
    usage = batches.get(None, batch.id).usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (17, 4)
    assert (usage.output_tokens, usage.total_tokens) == (5, 22)
    assert batches.get(None, batch.id).model == "tiny"  # as the first completed one named it
