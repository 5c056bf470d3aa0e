"""A server killed with SIGKILL in the middle of a batch, then restarted on the same data
directory: the batch resumes and completes with every custom_id exactly once in its output (no
loss, no duplicate, no torn line), and a batch cancelled before the kill stays cancelled with
nothing completed. (A batch left cancelling by a crash ending cancelled is the runner's test:
here the runner ends a cancel within moments, so the kill cannot be timed to fall between.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import MODEL_NAMES, Server, running_server
from tests.e2e.test_batches import create, wait_for

pytestmark = pytest.mark.e2e

REQUESTS = 32


def length(seed: int) -> int:
    """Tokens the request of `seed` makes: they end one after another."""
    return 8 + 4 * seed


def request(custom_id: str, seed: int, max_tokens: int | None = None) -> bytes:
    body = {
        "model": MODEL_NAMES[0],
        "messages": [{"role": "user", "content": f"Tell a story about the number {seed}."}],
        "max_tokens": max_tokens or length(seed),
        "ignore_eos": True,
        "seed": seed,
    }
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(line) + b"\n"


def kill_mid_batch(server: Server, batch_id: str) -> int:
    """Kills the server once part of the batch has finished; how many had."""
    client = server.sdk()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        counts = client.batches.retrieve(batch_id).request_counts
        assert counts is not None
        if counts.completed >= 4:
            assert counts.completed < REQUESTS, "the batch finished before the kill"
            os.kill(server.pid, signal.SIGKILL)
            return counts.completed
        time.sleep(0.05)
    raise AssertionError("the batch made no progress")


def test_a_batch_survives_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(tmp_path / "first", data_dir=data_dir) as server:
        client = server.sdk()
        running = create(client, b"".join(request(f"r{i}", i) for i in range(REQUESTS))).id
        # Its requests run for most of a minute, so that the cancel finds them running.
        stopped = create(client, request("s0", 0, 1000) + request("s1", 1, 1000)).id
        # The runner may end it before the answer is read: cancelled is as right.
        assert client.batches.cancel(stopped).status in ("cancelling", "cancelled")
        done_before = kill_mid_batch(server, running)
    with running_server(tmp_path / "second", data_dir=data_dir) as server:
        client = server.sdk()
        done = wait_for(client, running, {"completed", "failed", "expired", "cancelled"})
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert done.request_counts.model_dump() == {
            "total": REQUESTS,
            "completed": REQUESTS,
            "failed": 0,
        }
        assert done.output_file_id and done.error_file_id is None
        raw = client.files.content(done.output_file_id).content
        assert raw.endswith(b"\n")
        outputs = [orjson.loads(text) for text in raw.splitlines()]  # no torn line
        assert [o["custom_id"] for o in outputs] == [f"r{i}" for i in range(REQUESTS)]
        # Each result's tokens counted once, those before the crash included.
        assert done.usage is not None
        usages = [o["response"]["body"]["usage"] for o in outputs]
        assert done.usage.total_tokens == sum(u["total_tokens"] for u in usages)
        for seed, output in enumerate(outputs):
            assert output["response"]["status_code"] == 200
            assert output["response"]["body"]["usage"]["completion_tokens"] == length(seed)
        assert len({o["id"] for o in outputs}) == REQUESTS
        cancelled = wait_for(client, stopped, {"cancelled"})
        assert cancelled.request_counts is not None
        assert cancelled.request_counts.completed == 0
        assert cancelled.output_file_id is None
        assert done.in_progress_at is not None and done_before >= 4
