"""/v1/batches over HTTP: create, retrieve, list, cancel; errors; each key's batches its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from headrace.auth import Access, KeyStore, Limits
from headrace.batch import FileStore
from tests.batch.factories import request_line
from tests.fakes import MODEL_NAMES, FakeEngine, make_app, make_client
from tests.schema import validate

CHAT = "/v1/chat/completions"


@pytest.fixture
async def client(files: FileStore) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(make_app(files=files)) as client:
        yield client


async def upload(client: httpx.AsyncClient, content: bytes, **kwargs: Any) -> str:
    files = {"file": ("in.jsonl", content, "application/jsonl")}
    response = await client.post("/v1/files", data={"purpose": "batch"}, files=files, **kwargs)
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


async def create(
    client: httpx.AsyncClient,
    file_id: str,
    endpoint: str = CHAT,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
    return await client.post("/v1/batches", json=body, headers=headers)


def batch_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    batch: dict[str, Any] = response.json()
    validate(batch, "Batch")
    return batch


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    validate(response.json(), "ErrorResponse")
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_create_and_retrieve(client: httpx.AsyncClient) -> None:
    file_id = await upload(client, request_line("a"))
    batch = batch_of(await create(client, file_id, metadata={"job": "nightly"}))
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert (batch["endpoint"], batch["input_file_id"]) == (CHAT, file_id)
    assert batch["completion_window"] == "24h"
    assert batch["expires_at"] == batch["created_at"] + 24 * 3600
    assert batch["metadata"] == {"job": "nightly"}
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert batch["usage"] == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    assert "model" not in batch  # until a request completes
    assert batch_of(await client.get(f"/v1/batches/{batch['id']}")) == batch


async def test_a_batchs_files_expire_as_asked(files: FileStore) -> None:
    engine = FakeEngine()
    app = make_app(engine, files=files)
    expiry = {"anchor": "created_at", "seconds": 7200}
    async with app.router.lifespan_context(app), make_client(app) as client:
        file_id = await upload(client, request_line("a") + request_line("b", model="nope"))
        batch_id = batch_of(await create(client, file_id, output_expires_after=expiry))["id"]
        for _ in range(500):
            batch = batch_of(await client.get(f"/v1/batches/{batch_id}"))
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        for name in ("output_file_id", "error_file_id"):
            file = (await client.get(f"/v1/files/{batch[name]}")).json()
            assert file["expires_at"] == file["created_at"] + 7200
        assert "expires_at" not in (await client.get(f"/v1/files/{file_id}")).json()


async def test_a_batch_runs_on_the_apps_runner(files: FileStore) -> None:
    engine = FakeEngine()
    app = make_app(engine, files=files)
    async with app.router.lifespan_context(app), make_client(app) as client:
        file_id = await upload(client, request_line("a") + request_line("b", model="nope"))
        batch_id = batch_of(await create(client, file_id))["id"]
        for _ in range(500):
            batch = batch_of(await client.get(f"/v1/batches/{batch_id}"))
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        output = await client.get(f"/v1/files/{batch['output_file_id']}/content")
        assert b'"custom_id":"a"' in output.content
        errors = await client.get(f"/v1/files/{batch['error_file_id']}/content")
        assert b'"status_code":404' in errors.content
    # The usage of the one completed request; the failed one has none.
    usage = orjson.loads(output.content)["response"]["body"]["usage"]
    assert batch["usage"]["input_tokens"] == usage["prompt_tokens"] > 0
    assert batch["usage"]["output_tokens"] == usage["completion_tokens"] > 0
    assert batch["usage"]["total_tokens"] == usage["total_tokens"]
    assert batch["model"] == MODEL_NAMES[0]


async def test_cancel(client: httpx.AsyncClient) -> None:
    file_id = await upload(client, request_line("a"))
    batch_id = batch_of(await create(client, file_id))["id"]
    cancelling = batch_of(await client.post(f"/v1/batches/{batch_id}/cancel"))
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] >= cancelling["created_at"]
    assert batch_of(await client.post(f"/v1/batches/{batch_id}/cancel")) == cancelling


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"input_file_id": None}, "input_file_id"),
        ({"output_expires_after": {"anchor": "created_at"}}, "output_expires_after.seconds"),
        (
            {"output_expires_after": {"anchor": "now", "seconds": 3600}},
            "output_expires_after.anchor",
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 60}},
            "output_expires_after.seconds",
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 3600, "x": 1}},
            "output_expires_after.x",
        ),
        ({"output_expires_after": 3600}, "output_expires_after"),
    ],
)
async def test_a_bad_create_is_400(
    client: httpx.AsyncClient, change: dict[str, Any], param: str
) -> None:
    file_id = await upload(client, request_line("a"))
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **change}
    error = error_of(await client.post("/v1/batches", json=body), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_a_bad_json_body_is_400(client: httpx.AsyncClient) -> None:
    error_of(await client.post("/v1/batches", content=b"{"), 400)


async def test_an_unknown_input_file_is_404(client: httpx.AsyncClient) -> None:
    error = error_of(await create(client, "file-nonesuch"), 404)
    assert error["param"] == "input_file_id"


async def test_an_unknown_batch_is_404(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/batches/batch_x"), ("POST", "/v1/batches/batch_x/cancel")]:
        error = error_of(await client.request(method, path), 404)
        assert "batch_x" in error["message"]


async def test_pagination(client: httpx.AsyncClient) -> None:
    file_id = await upload(client, request_line("a"))
    ids = [batch_of(await create(client, file_id))["id"] for _ in range(5)]
    newest_first = ids[::-1]
    page = (await client.get("/v1/batches", params={"limit": 2})).json()
    validate(page, "ListBatchesResponse")
    assert [b["id"] for b in page["data"]] == newest_first[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)
    rest = await client.get("/v1/batches", params={"limit": 100, "after": page["last_id"]})
    assert [b["id"] for b in rest.json()["data"]] == newest_first[2:]
    assert rest.json()["has_more"] is False
    whole = (await client.get("/v1/batches")).json()
    assert [b["id"] for b in whole["data"]] == newest_first
    for limit in ("0", "101", "x"):
        error = error_of(await client.get("/v1/batches", params={"limit": limit}), 400)
        assert error["param"] == "limit"
    error_of(await client.get("/v1/batches", params={"after": "batch_nonesuch"}), 400)


async def test_an_empty_list(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/batches")).json()
    validate(page, "ListBatchesResponse")
    assert page == {"object": "list", "data": [], "has_more": False}


async def test_each_key_sees_only_its_own_batches(files: FileStore, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    app = make_app(access=Access((), store), files=files)
    alice, bob = ({"Authorization": f"Bearer {store.create().secret}"} for _ in range(2))
    async with make_client(app) as client:
        error_of(await client.get("/v1/batches"), 401)
        file_id = await upload(client, request_line("a"), headers=alice)
        error_of(await create(client, file_id, headers=bob), 404)  # not bob's file
        batch_id = batch_of(await create(client, file_id, headers=alice))["id"]
        assert batch_of(await client.get(f"/v1/batches/{batch_id}", headers=alice))
        error_of(await client.get(f"/v1/batches/{batch_id}", headers=bob), 404)
        error_of(await client.post(f"/v1/batches/{batch_id}/cancel", headers=bob), 404)
        assert (await client.get("/v1/batches", headers=bob)).json()["data"] == []
        mine = (await client.get("/v1/batches", headers=alice)).json()["data"]
        assert [b["id"] for b in mine] == [batch_id]


async def test_a_keys_batch_may_name_only_the_keys_models(files: FileStore, tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    app = make_app(FakeEngine(), access=Access((), store), files=files)
    key = {"Authorization": f"Bearer {store.create(models=[MODEL_NAMES[0]]).secret}"}
    async with app.router.lifespan_context(app), make_client(app) as client:
        lines = request_line("mine") + request_line("other", model=MODEL_NAMES[1])
        file_id = await upload(client, lines, headers=key)
        batch_id = batch_of(await create(client, file_id, headers=key))["id"]
        for _ in range(500):
            batch = batch_of(await client.get(f"/v1/batches/{batch_id}", headers=key))
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        errors = await client.get(f"/v1/files/{batch['error_file_id']}/content", headers=key)
        [line] = [orjson.loads(text) for text in errors.content.splitlines()]
        assert line["custom_id"] == "other"
        assert line["response"]["status_code"] == 404
        assert line["response"]["body"]["error"]["code"] == "model_not_found"


async def test_a_keys_batch_tokens_leave_its_interactive_tokens_alone(
    files: FileStore, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    app = make_app(FakeEngine(), access=Access((), store), files=files)
    key = {"Authorization": f"Bearer {store.create(limits=Limits(tokens=100)).secret}"}
    async with app.router.lifespan_context(app), make_client(app) as client:
        lines = request_line("small", max_tokens=5) + request_line("large", max_tokens=200)
        file_id = await upload(client, lines, headers=key)
        batch_id = batch_of(await create(client, file_id, headers=key))["id"]
        for _ in range(500):
            response = await client.get(f"/v1/batches/{batch_id}", headers=key)
            if batch_of(response)["status"] == "completed":
                break
            await asyncio.sleep(0.01)
        assert response.headers["x-ratelimit-remaining-tokens"] == "100"
        batch = batch_of(response)
        assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        errors = await client.get(f"/v1/files/{batch['error_file_id']}/content", headers=key)
        [line] = [orjson.loads(text) for text in errors.content.splitlines()]
        assert line["custom_id"] == "large" and line["response"]["status_code"] == 429
        assert "batch tokens per min" in line["response"]["body"]["error"]["message"]


async def test_health_counts_the_batches_by_status(client: httpx.AsyncClient) -> None:
    file_id = await upload(client, request_line("a"))
    for _ in range(2):
        batch_of(await create(client, file_id))
    cancelled = batch_of(await create(client, file_id))["id"]
    await client.post(f"/v1/batches/{cancelled}/cancel")
    health = (await client.get("/health")).json()
    assert sum(health["batches"].values()) == 3
    assert health["batches"]["validating"] == 2
