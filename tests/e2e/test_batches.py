"""The Batch API on the real server and model, through the real OpenAI SDK: a batch runs to
completed with every custom_id once, a greedy body equal to the same request sent online, a
bad request in the error file, and cancel mid-run."""

from __future__ import annotations

import time
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Name a color."}]


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


def line(custom_id: str, **body: Any) -> bytes:
    request = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL_NAMES[0], "messages": MESSAGES, "max_tokens": 8, **body},
    }
    return orjson.dumps(request) + b"\n"


def wait_for(client: openai.OpenAI, batch_id: str, statuses: set[str]) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def test_a_batch_runs_through_the_sdk(server: Server) -> None:
    client = sdk(server)
    content = (
        line("greedy", temperature=0)
        + b"".join(line(f"r{i}", seed=i) for i in range(3))
        + line("bad", model="no-such-model")
    )
    file = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"test": "e2e"},
    )
    assert batch.status == "validating" and batch.metadata == {"test": "e2e"}
    done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (5, 4)
    assert done.request_counts.failed == 1
    assert done.output_file_id and done.error_file_id
    outputs = [
        orjson.loads(text) for text in client.files.content(done.output_file_id).iter_lines()
    ]
    assert [o["custom_id"] for o in outputs] == ["greedy", "r0", "r1", "r2"]
    for output in outputs:
        assert output["response"]["status_code"] == 200
        body = output["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL_NAMES[0]
        assert body["usage"]["completion_tokens"] <= 8
    (error,) = [orjson.loads(t) for t in client.files.content(done.error_file_id).iter_lines()]
    assert error["custom_id"] == "bad" and error["error"] is None
    assert error["response"]["status_code"] == 404
    assert error["response"]["body"]["error"]["code"] == "model_not_found"
    assert batch.id in [b.id for b in client.batches.list(limit=100)]


def test_a_greedy_body_is_what_the_same_request_gets_online(server: Server) -> None:
    """Alone in its batch, and with a prompt shorter than a cache block: the online request then
    runs as the batch's did (neither finds a cached prefix, nor shares a step)."""
    client = sdk(server)
    body = {"model": MODEL_NAMES[0], "prompt": "The sky is", "max_tokens": 8, "temperature": 0}
    request = {"custom_id": "g", "method": "POST", "url": "/v1/completions", "body": body}
    file = client.files.create(file=("in.jsonl", orjson.dumps(request)), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
    assert done.status == "completed" and done.output_file_id
    (output,) = [orjson.loads(t) for t in client.files.content(done.output_file_id).iter_lines()]
    raw = client.completions.with_raw_response.create(**body)
    online = orjson.loads(raw.http_response.content)
    answered = output["response"]["body"]
    for volatile in ("id", "created"):
        answered.pop(volatile), online.pop(volatile)
    assert answered == online


def test_cancel_through_the_sdk(server: Server) -> None:
    client = sdk(server)
    content = b"".join(line(f"r{i}", max_tokens=64, seed=i) for i in range(40))
    file = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, {"in_progress"})
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    cancelled = wait_for(client, batch.id, {"cancelled"})
    assert cancelled.cancelled_at is not None
    counts = cancelled.request_counts
    assert counts is not None and counts.completed < 40
    if cancelled.output_file_id:
        text = client.files.content(cancelled.output_file_id).text
        assert len(text.splitlines()) == counts.completed
    deadline = time.monotonic() + 10  # aborted requests leave the engine at its next step
    while server.health()["batch_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.health()["batch_running"] == 0
