"""GET /v1/models, /v1/models/{id} and /health."""

from __future__ import annotations

import asyncio

import httpx

from headrace.engine.outputs import Priority, SamplingParams
from tests.fakes import MODEL_NAMES, FakeEngine, FakeServed, chat_body, make_client
from tests.schema import validate


async def test_list_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    validate(body, "ListModelsResponse")
    assert [model["id"] for model in body["data"]] == list(MODEL_NAMES)
    assert {(m["object"], m["owned_by"]) for m in body["data"]} == {("model", "headrace")}


async def test_retrieve_model(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"/v1/models/{MODEL_NAMES[1]}")).json()
    validate(body, "Model")
    assert body["id"] == MODEL_NAMES[1]


async def test_model_name_with_a_slash() -> None:
    from headrace.api import create_app

    app = create_app(FakeServed(model_names=("HuggingFaceTB/SmolLM2-135M-Instruct",)))
    async with make_client(app) as client:
        response = await client.get("/v1/models/HuggingFaceTB/SmolLM2-135M-Instruct")
    assert response.json()["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


async def test_health_counts_running_requests(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    idle = {
        "status": "ok",
        "running": 0,
        "waiting": 0,
        "kv_cache_usage": 0.0,
        "preemptions": 0,
        "batch_running": 0,
        "batch_waiting": 0,
        "compiling": False,
    }
    health = (await client.get("/health")).json()
    assert isinstance(health.pop("batches"), dict)  # by status (tests/api/test_batches.py)
    assert health == idle
    engine.step_delay = 0.02
    request = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    await engine.started.wait()
    assert (await client.get("/health")).json()["running"] == 1
    assert (await request).status_code == 200
    assert (await client.get("/health")).json()["running"] == 0


async def test_health_counts_batch_requests_apart(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    engine.step_delay = 0.02
    engine.waiting, engine.batch_waiting = 5, 3
    stream = engine.generate("b", [1, 2], SamplingParams(max_tokens=4), priority=Priority.BATCH)
    await anext(stream)
    health = (await client.get("/health")).json()
    assert health["running"] == health["batch_running"] == 1
    assert (health["waiting"], health["batch_waiting"]) == (5, 3)
    await stream.aclose()
    assert (await client.get("/health")).json()["batch_running"] == 0
