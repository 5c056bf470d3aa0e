"""GET /metrics: each request moves its families by exactly itself; the engine's gauges under
headrace's and vLLM's names; open without a key; every family documented."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from headrace.auth import Access, KeyStore, Limits
from headrace.batch import FileStore
from headrace.batch.lines import LineResult
from headrace.engine.outputs import EngineStats
from headrace.metrics import Metrics
from tests.api.test_disconnect import Client, scope
from tests.batch.factories import make_batch, make_batches, request_line
from tests.fakes import EOS, MODEL_NAMES, REPLY, FakeEngine, chat_body, make_app, make_client
from tests.guide import WEATHER_TOOL

DOCS = Path(__file__).parent.parent.parent / "docs"
MODEL = {"model_name": MODEL_NAMES[0]}
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@dataclass(frozen=True)
class Scrape:
    # Each sample's value, by its name and labels.
    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when absent (a labelled counter not yet counted)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return Scrape(values)


def changes(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after(name, **labels) - before(name, **labels)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_one_request_moves_its_families_by_itself(path: str, stream: bool) -> None:
    async with make_client(make_app()) as client:
        before = await scrape(client)
        body: dict[str, Any] = chat_body(stream=stream, max_tokens=100)
        if path == COMPLETIONS:
            body = {"model": MODEL_NAMES[0], "prompt": "Hi", "max_tokens": 100, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        response = await client.post(path, json=body)
        after = await scrape(client)
    usage = (
        orjson.loads(response.text.split("data: ")[-2])["usage"]
        if stream
        else response.json()["usage"]
    )
    assert usage["completion_tokens"] == len(REPLY) + 1
    for family in (
        "time_to_first_token_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_prefill_time_seconds",
        "request_decode_time_seconds",
        "request_prompt_tokens",
        "request_generation_tokens",
    ):
        assert changes(before, after, f"headrace:{family}_count", **MODEL) == 1, family
    # One interval between each of the engine's outputs: a token each, then the EOS.
    assert changes(before, after, "headrace:inter_token_latency_seconds_count", **MODEL) == len(
        REPLY
    )
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert changes(before, after, "headrace:prompt_tokens_total", **MODEL) == prompt
    assert changes(before, after, "headrace:generation_tokens_total", **MODEL) == completion
    assert changes(before, after, "headrace:request_prompt_tokens_sum", **MODEL) == prompt
    assert changes(before, after, "headrace:prefix_cache_queries_total", **MODEL) == prompt
    assert changes(before, after, "headrace:prefix_cache_hits_total", **MODEL) == 0
    stop = {"finished_reason": "stop", **MODEL}
    assert changes(before, after, "headrace:request_success_total", **stop) == 1
    route = {"route": path, "status": "200"}
    assert changes(before, after, "headrace:http_responses_total", **route) == 1


@pytest.mark.parametrize(
    ("engine", "body", "reason"),
    [
        (FakeEngine(), {"max_tokens": 3}, "length"),
        (FakeEngine(raise_after=3), {"stream": True}, "error"),
        (
            FakeEngine(
                [*b'<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', EOS],
                max_model_len=4096,
            ),
            {"tools": [WEATHER_TOOL]},
            "tool_calls",
        ),
    ],
    ids=["length", "error", "tool_calls"],
)
async def test_finish_reasons(engine: FakeEngine, body: dict[str, Any], reason: str) -> None:
    async with make_client(make_app(engine)) as client:
        before = await scrape(client)
        await client.post(CHAT, json=chat_body(**body))
        after = await scrape(client)
    labels = {"finished_reason": reason, **MODEL}
    assert changes(before, after, "headrace:request_success_total", **labels) == 1
    assert after("headrace:request_success_total", finished_reason="stop", **MODEL) == 0


async def test_a_stream_its_client_abandons_counts_as_abort() -> None:
    engine = FakeEngine(step_delay=0.01)
    app = make_app(engine)
    client = Client(orjson.dumps(chat_body(stream=True)), leave_after_bodies=4)
    await asyncio.wait_for(app(scope("2.4"), client.receive, client.send), 5)
    async with make_client(app) as http:
        after = await scrape(http)
    assert after("headrace:request_success_total", finished_reason="abort", **MODEL) == 1
    assert after("headrace:e2e_request_latency_seconds_count", **MODEL) == 1
    assert 0 < after("headrace:generation_tokens_total", **MODEL) < len(REPLY)


async def test_an_overloaded_refusal_is_counted() -> None:
    engine = FakeEngine()
    engine.waiting = 5
    async with make_client(make_app(engine, max_waiting=2)) as client:
        before = await scrape(client)
        response = await client.post(CHAT, json=chat_body())
        after = await scrape(client)
    assert response.status_code == 503
    assert changes(before, after, "headrace:requests_refused_total", status="503") == 1
    route = {"route": CHAT, "status": "503"}
    assert changes(before, after, "headrace:http_responses_total", **route) == 1


async def test_a_rate_limited_request_counts_as_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    secret = store.create(limits=Limits(requests=1)).secret
    headers = {"Authorization": f"Bearer {secret}"}
    async with make_client(make_app(access=Access(store=store))) as client:
        before = await scrape(client)
        statuses = [(await client.get("/v1/models", headers=headers)).status_code for _ in "ab"]
        after = await scrape(client)
    assert statuses == [200, 429]
    assert changes(before, after, "headrace:requests_refused_total", status="429") == 1
    route = {"route": "/v1/models", "status": "429"}
    assert changes(before, after, "headrace:http_responses_total", **route) == 1


async def test_responses_are_counted_by_route_template() -> None:
    async with make_client(make_app()) as client:
        await client.get(f"/v1/models/{MODEL_NAMES[1]}")
        await client.get("/v1/models/nothing-served")
        await client.get("/no/such/route")
        after = await scrape(client)
    count = "headrace:http_responses_total"
    assert after(count, route="/v1/models/{model_id}", status="200") == 1
    assert after(count, route="/v1/models/{model_id}", status="404") == 1
    assert after(count, route="other", status="404") == 1


async def test_the_gauges_read_the_engine_under_both_names() -> None:
    engine = FakeEngine()
    stats = EngineStats(running=3, waiting=5, kv_cache_usage=0.25, num_preemptions=7)
    engine.stats = lambda: stats  # type: ignore[method-assign]
    async with make_client(make_app(engine)) as client:
        after = await scrape(client)
    for prefix in ("headrace:", "vllm:"):
        assert after(f"{prefix}num_requests_running", **MODEL) == 3
        assert after(f"{prefix}num_requests_waiting", **MODEL) == 5
        assert after(f"{prefix}kv_cache_usage_perc", **MODEL) == 0.25
        shape = {"block_size": "16", "num_gpu_blocks": "1024"}
        assert after(f"{prefix}cache_config_info", **MODEL, **shape) == 1
    assert after("headrace:num_preemptions_total", **MODEL) == 7


async def test_the_batch_gauge_counts_requests_of_in_progress_batches(files: FileStore) -> None:
    batches = make_batches(files)
    batch = await make_batch(batches, b"".join(request_line(f"r{i}") for i in range(3)))
    batches.start(batch.id, 3)
    batches.record(batch.id, {1: LineResult("completed", "{}")})
    async with make_client(make_app(files=files)) as client:
        after = await scrape(client)
    assert after("headrace:num_batch_requests_queued", **MODEL) == 2


async def test_metrics_need_no_key_when_keys_are_configured() -> None:
    async with make_client(make_app(api_keys=["sk-only"])) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401


async def test_every_family_is_documented() -> None:
    metrics = Metrics(MODEL_NAMES[0], FakeEngine(), lambda: 0)
    metrics.count_response("/v1/models", 200)  # a labelled family shows once counted
    documented = (DOCS / "metrics.md").read_text()
    families = list(text_string_to_metric_families(metrics.exposition().decode()))
    assert len(families) >= 20
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in documented, name


async def test_the_dashboard_plots_families_that_exist() -> None:
    dashboard = json.loads((DOCS / "grafana" / "headrace.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    plotted = {name for query in queries for name in re.findall(r"headrace:\w+", query)}
    async with make_client(make_app()) as client:
        await client.post(CHAT, json=chat_body())
        exposed = {name for name, _ in (await scrape(client)).values}
    assert len(plotted) >= 15
    assert plotted <= exposed, plotted - exposed
