"""An offline batch on a fake engine: every result in input order, a request failing alone,
the engine's share bounded, a bad file refused, and the output replaced only when all is done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson
import pytest

from headrace.batch.offline import LineDone, read_input, run_offline
from headrace.engine.outputs import Priority, SamplingParams, TokenOutput
from tests.batch.factories import make_endpoints, request_line
from tests.fakes import EOS, REPLY, FakeEngine
from tests.schema import validate


class HoldingEngine(FakeEngine):
    """A fake engine that holds a request whose prompt says "hold" until `release` is set, and
    counts the most requests it generated for at once."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Set to let the held requests go on.
        self.release = asyncio.Event()
        # The most requests generated for at once.
        self.peak = 0

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, **options: Any
    ) -> AsyncGenerator[TokenOutput, None]:
        if b"hold" in bytes(token for token in prompt_token_ids if token < EOS):
            await self.release.wait()
        async for output in super().generate(request_id, prompt_token_ids, params, **options):
            self.peak = max(self.peak, self.running)
            yield output


def write_input(directory: Path, *lines: bytes) -> Path:
    path = directory / "in.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def completion_line(custom_id: str, url: str = "/v1/completions") -> bytes:
    body = {"model": "test-model", "prompt": "Hi", "max_tokens": 2}
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return orjson.dumps(request) + b"\n"


def read_output(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.partial"))


async def test_every_result_in_input_order_a_failed_one_in_its_place(tmp_path: Path) -> None:
    engine = HoldingEngine(step_delay=0.001)
    max_tokens = [3 + i % 2 for i in range(9)]
    source = write_input(
        tmp_path,
        *(request_line(f"r{i}", max_tokens=max_tokens[i]) for i in range(3)),
        request_line("unknown", model="no-such-model"),
        *(request_line(f"r{i}", max_tokens=max_tokens[i]) for i in range(3, 9)),
    )
    batch = read_input(source)
    assert batch.endpoint == "/v1/chat/completions" and not batch.errors
    output = tmp_path / "out.jsonl"
    done: list[LineDone] = []
    summary = await run_offline(
        make_endpoints(engine), batch, output, concurrency=3, on_done=done.append
    )
    lines = read_output(output)
    custom_ids = ["r0", "r1", "r2", "unknown", *(f"r{i}" for i in range(3, 9))]
    assert [line["custom_id"] for line in lines] == custom_ids
    for line in lines:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        body = line["response"]["body"]
        if line["custom_id"] == "unknown":
            assert line["response"]["status_code"] == 404
            validate(body, "ErrorResponse")
            assert body["error"]["code"] == "model_not_found"
        else:
            assert line["response"]["status_code"] == 200
            validate(body, "CreateChatCompletionResponse")
            content = body["choices"][0]["message"]["content"]
            assert content == REPLY[: max_tokens[int(line["custom_id"][1:])]]
    assert (summary.requests, summary.failed) == (10, 1)
    assert summary.completion_tokens == sum(max_tokens) == 31
    assert "10 requests, 1 failed, 31 completion tokens in" in summary.describe()
    assert sorted(d.completion_tokens for d in done) == sorted([0, *max_tokens])
    assert [d.failed for d in done].count(True) == 1
    assert 1 < engine.peak <= 3
    assert set(engine.priorities.values()) == {Priority.BATCH}
    assert partial_files(tmp_path) == []


async def test_a_completions_file_runs_on_its_endpoint(tmp_path: Path) -> None:
    source = write_input(tmp_path, *(completion_line(f"c{i}") for i in range(3)))
    batch = read_input(source)
    assert batch.endpoint == "/v1/completions" and len(batch.lines) == 3
    output = tmp_path / "out.jsonl"
    await run_offline(make_endpoints(), batch, output, concurrency=8)
    lines = read_output(output)
    assert [line["custom_id"] for line in lines] == ["c0", "c1", "c2"]
    for line in lines:
        validate(line["response"]["body"], "CreateCompletionResponse")


async def test_a_line_is_written_once_every_line_before_it_is(tmp_path: Path) -> None:
    engine = HoldingEngine()
    first = request_line("r0", messages=[{"role": "user", "content": "hold"}])
    source = write_input(tmp_path, first, *(request_line(f"r{i}") for i in range(1, 4)))
    written: list[int] = []

    def on_done(done: LineDone) -> None:
        (partial,) = partial_files(tmp_path)
        written.append(len(partial.read_bytes().splitlines()))
        if len(written) == 3:  # every one but the held first
            engine.release.set()

    output = tmp_path / "out.jsonl"
    await run_offline(
        make_endpoints(engine), read_input(source), output, concurrency=4, on_done=on_done
    )
    assert written == [0, 0, 0, 4]
    assert [line["custom_id"] for line in read_output(output)] == ["r0", "r1", "r2", "r3"]


@pytest.mark.parametrize(
    ("lines", "errors"),
    [
        ([b"\n", b"  \n"], [("empty_file", None)]),
        ([b"{not json\n", request_line("a")], [("invalid_json_line", 1)]),
        ([request_line("a"), request_line("a")], [("duplicate_custom_id", 2)]),
        ([completion_line("a"), request_line("b")], [("invalid_request", 2)]),
        ([completion_line("a", "/v1/embeddings"), request_line("b")], [("invalid_request", 1)]),
        ([b'{"custom_id": "a", "url": "/v1/completions"}\n'], [("missing_required_parameter", 1)]),
    ],
)
def test_a_bad_file_is_refused_with_each_error(
    tmp_path: Path, lines: list[bytes], errors: list[tuple[str, int | None]]
) -> None:
    batch = read_input(write_input(tmp_path, *lines))
    assert [(error.code, error.line) for error in batch.errors] == errors
    assert not batch.lines


def test_the_endpoint_is_the_url_of_the_first_request(tmp_path: Path) -> None:
    batch = read_input(write_input(tmp_path, b"\n", b"[]\n", completion_line("a")))
    assert batch.endpoint == "/v1/completions"
    assert [(error.code, error.line) for error in batch.errors] == [("invalid_json_line", 2)]


async def test_an_error_leaves_the_old_output_and_no_partial_file(tmp_path: Path) -> None:
    source = write_input(tmp_path, *(request_line(f"r{i}", max_tokens=2) for i in range(6)))
    output = tmp_path / "out.jsonl"
    output.write_text("the old output\n")

    def on_done(done: LineDone) -> None:
        raise RuntimeError("the progress bar fell over")

    with pytest.raises(RuntimeError, match="fell over"):
        await run_offline(
            make_endpoints(), read_input(source), output, concurrency=2, on_done=on_done
        )
    assert output.read_text() == "the old output\n"
    assert partial_files(tmp_path) == []


async def test_a_cancelled_run_aborts_its_requests_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(step_delay=0.01)
    short = request_line("r0", max_tokens=1)  # done while r1 still runs
    source = write_input(tmp_path, short, *(request_line(f"r{i}") for i in range(1, 8)))
    output = tmp_path / "out.jsonl"
    first = asyncio.Event()
    run = asyncio.create_task(
        run_offline(
            make_endpoints(engine),
            read_input(source),
            output,
            concurrency=2,
            on_done=lambda done: first.set(),
        )
    )
    await first.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not output.exists()
    assert partial_files(tmp_path) == []
    assert engine.closed_early and engine.running == 0
    assert len(engine.prompts) < 8  # the rest never started
