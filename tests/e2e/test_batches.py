"""The Batch API on the real server and model, through the real OpenAI SDK: a batch runs to
completed with every custom_id once, a greedy body equal to the same request sent online, a
bad request in the error file, and cancel mid-run."""

from __future__ import annotations

import time
from typing import Any

import openai
import orjson
import pytest

from headrace.auth import KeyStore, Limits
from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Name a color."}]


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
    client = server.sdk()
    content = (
        line("greedy", temperature=0)
        + b"".join(line(f"r{i}", seed=i) for i in range(3))
        + line("bad", model="no-such-model")
    )
    day = {"anchor": "created_at", "seconds": 86_400}
    file = client.files.create(file=("in.jsonl", content), purpose="batch", expires_after=day)
    assert file.expires_at == file.created_at + 86_400
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"test": "e2e"},
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert batch.status == "validating" and batch.metadata == {"test": "e2e"}
    done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (5, 4)
    assert done.request_counts.failed == 1
    assert done.output_file_id and done.error_file_id
    for file_id in (done.output_file_id, done.error_file_id):
        written = client.files.retrieve(file_id)
        assert written.expires_at == written.created_at + 3600
    outputs = [
        orjson.loads(text) for text in client.files.content(done.output_file_id).iter_lines()
    ]
    assert [o["custom_id"] for o in outputs] == ["greedy", "r0", "r1", "r2"]
    for output in outputs:
        assert output["response"]["status_code"] == 200
        body = output["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL_NAMES[0]
        assert body["usage"]["completion_tokens"] <= 8
    # The batch's usage is its completed requests' (the failed one used none), via the SDK.
    assert done.model == MODEL_NAMES[0] and done.usage is not None
    usages = [o["response"]["body"]["usage"] for o in outputs]
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usages)
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usages)
    assert done.usage.total_tokens == sum(u["total_tokens"] for u in usages)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    assert done.usage.input_tokens_details.cached_tokens == cached
    (error,) = [orjson.loads(t) for t in client.files.content(done.error_file_id).iter_lines()]
    assert error["custom_id"] == "bad" and error["error"] is None
    assert error["response"]["status_code"] == 404
    assert error["response"]["body"]["error"]["code"] == "model_not_found"
    assert batch.id in [b.id for b in client.batches.list(limit=100)]


def test_a_greedy_body_is_what_the_same_request_gets_online(server: Server) -> None:
    """Alone in its batch, and with a prompt shorter than a cache block: the online request then
    runs as the batch's did (neither finds a cached prefix, nor shares a step)."""
    client = server.sdk()
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
    client = server.sdk()
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


def create(client: openai.OpenAI, content: bytes) -> Any:
    file = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def new_key(server: Server, limits: Limits | None = None) -> str:
    """A new key in the server's key store, with `limits`."""
    store = KeyStore(server.key_store)
    try:
        return store.create(limits=limits or Limits()).secret
    finally:
        store.close()


def test_a_bad_file_fails_the_batch_with_each_error(server: Server) -> None:
    client = server.sdk()
    content = line("a") + b"{not json\n" + line("a")
    failed = wait_for(client, create(client, content).id, {"failed"})
    assert failed.errors is not None and failed.failed_at is not None
    errors = [(error.code, error.line) for error in failed.errors.data or []]
    assert errors == [("invalid_json_line", 2), ("duplicate_custom_id", 3)]
    assert failed.output_file_id is None and failed.request_counts is not None
    assert failed.request_counts.total == 0


def test_batches_page_newest_first(server: Server) -> None:
    client = server.sdk(new_key(server))  # a key of its own: only these batches
    made = [create(client, b"{}\n").id for _ in range(3)]  # each fails validation at once
    first = client.batches.list(limit=2)
    assert [batch.id for batch in first.data] == made[:0:-1] and first.has_more
    assert [batch.id for batch in client.batches.list(limit=2, after=made[1]).data] == made[:1]
    assert [batch.id for batch in client.batches.list(limit=2)] == made[::-1]  # every page


def test_each_key_sees_only_its_own_batches(server: Server) -> None:
    alice, bob = server.sdk(new_key(server)), server.sdk(new_key(server))
    mine = create(alice, b"{}\n")
    for touch in (bob.batches.retrieve, bob.batches.cancel):
        with pytest.raises(openai.NotFoundError):
            touch(mine.id)
    assert mine.id not in [batch.id for batch in bob.batches.list()]
    assert alice.batches.retrieve(mine.id).id == mine.id


def test_a_keys_batch_tokens_are_its_own(server: Server) -> None:
    """A key's batch spends its tokens per minute apart from its interactive ones; a request
    over the whole limit fails alone with 429."""
    client = server.sdk(new_key(server, Limits(tokens=300)))
    done = wait_for(
        client,
        create(client, line("small", max_tokens=4) + line("large", max_tokens=400)).id,
        {"completed"},
    )
    assert done.request_counts is not None and done.request_counts.failed == 1
    assert done.error_file_id is not None
    (error,) = [orjson.loads(t) for t in client.files.content(done.error_file_id).iter_lines()]
    assert error["custom_id"] == "large" and error["response"]["status_code"] == 429
    listed = client.models.with_raw_response.list()
    assert listed.headers["x-ratelimit-remaining-tokens"] == "300"
