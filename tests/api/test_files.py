"""/v1/files: uploads streamed to disk within their limit, and each key's files its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from headrace.auth import Access, KeyStore
from headrace.batch import FileStore
from tests.batch.factories import make_files
from tests.fakes import FakeClock, make_app, make_client
from tests.schema import validate

LINES = b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
MAX_FILE = 4096
BOUNDARY = "b0undary"


@pytest.fixture
async def client(files: FileStore) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(files=files, max_file_bytes=MAX_FILE, max_body_bytes=1024)
    async with make_client(app) as client:
        yield client


def stored(files: FileStore) -> list[str]:
    return sorted(path.name for path in files.directory.iterdir())


async def upload(
    client: httpx.AsyncClient,
    content: bytes = LINES,
    purpose: str = "batch",
    filename: str = "in.jsonl",
    **kwargs: Any,
) -> httpx.Response:
    files = {"file": (filename, content, "application/jsonl")}
    return await client.post("/v1/files", data={"purpose": purpose}, files=files, **kwargs)


def form(*parts: tuple[str, str | None, bytes], end: bool = True) -> bytes:
    """A multipart/form-data body of (name, filename, content) parts, in this order."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += content + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if end else b"")


async def post_form(client: httpx.AsyncClient, body: bytes | Any, **headers: str) -> httpx.Response:
    content_type = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await client.post("/v1/files", content=body, headers={**content_type, **headers})


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    validate(response.json(), "ErrorResponse")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


async def test_upload_retrieve_download_delete(client: httpx.AsyncClient, files: FileStore) -> None:
    response = await upload(client)
    assert response.status_code == 200, response.text
    file = response.json()
    validate(file, "OpenAIFile")
    assert file["id"].startswith("file-") and file["object"] == "file"
    assert (file["bytes"], file["filename"], file["purpose"]) == (len(LINES), "in.jsonl", "batch")
    assert file["status"] == "processed" and isinstance(file["created_at"], int)
    assert stored(files) == [file["id"]]

    retrieved = await client.get(f"/v1/files/{file['id']}")
    assert retrieved.status_code == 200 and retrieved.json() == file

    content = await client.get(f"/v1/files/{file['id']}/content")
    assert content.status_code == 200 and content.content == LINES
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-length"] == str(len(LINES))

    deleted = await client.delete(f"/v1/files/{file['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    validate(deleted.json(), "DeleteFileResponse")
    assert stored(files) == []
    for response in (
        await client.get(f"/v1/files/{file['id']}"),
        await client.get(f"/v1/files/{file['id']}/content"),
        await client.delete(f"/v1/files/{file['id']}"),
    ):
        assert error_of(response, 404)["message"] == f"No such File object: {file['id']}"


async def test_the_file_part_may_come_before_the_purpose(client: httpx.AsyncClient) -> None:
    response = await post_form(
        client, form(("file", "x.jsonl", LINES), ("purpose", None, b"batch"))
    )
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "x.jsonl"


async def test_a_file_part_without_a_filename(client: httpx.AsyncClient) -> None:
    response = await post_form(client, form(("purpose", None, b"batch"), ("file", None, LINES)))
    assert response.status_code == 200 and response.json()["filename"] == "upload"


async def test_other_fields_are_ignored(client: httpx.AsyncClient) -> None:
    body = form(("purpose", None, b"batch"), ("note", None, b"x"), ("file", "x.jsonl", LINES))
    assert (await post_form(client, body)).status_code == 200


def expiring(anchor: bytes | None, seconds: bytes | None) -> bytes:
    """An upload with the form fields the OpenAI SDKs send for `expires_after`."""
    parts = [("purpose", None, b"batch")]
    if anchor is not None:
        parts.append(("expires_after[anchor]", None, anchor))
    if seconds is not None:
        parts.append(("expires_after[seconds]", None, seconds))
    return form(*parts, ("file", "x.jsonl", LINES))


async def test_a_file_that_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    files = make_files(tmp_path / "data", clock)
    async with make_client(make_app(files=files)) as client:
        created = await post_form(client, expiring(b"created_at", b"3600"))
        assert created.status_code == 200, created.text
        file = created.json()
        validate(file, "OpenAIFile")
        assert file["expires_at"] == file["created_at"] + 3600 == int(clock()) + 3600
        assert "expires_at" not in (await upload(client)).json()  # one that never expires
        assert (await client.get(f"/v1/files/{file['id']}")).json() == file
        clock.advance(3599)
        assert (await client.get(f"/v1/files/{file['id']}/content")).content == LINES
        clock.advance(1)  # gone to clients from its expires_at, before its bytes are removed
        assert (await client.get(f"/v1/files/{file['id']}")).status_code == 404
        assert (await client.get(f"/v1/files/{file['id']}/content")).status_code == 404
        listed = (await client.get("/v1/files")).json()["data"]
        assert file["id"] not in [f["id"] for f in listed] and len(listed) == 1
        assert file["id"] in stored(files)
        assert files.remove_expired() == 1
        assert file["id"] not in stored(files) and len(stored(files)) == 1
    files.store.close()


@pytest.mark.parametrize(
    ("anchor", "seconds", "param"),
    [
        (b"created_at", None, "expires_after.seconds"),
        (None, b"3600", "expires_after.anchor"),
        (b"last_active_at", b"3600", "expires_after.anchor"),
        (b"created_at", b"3599", "expires_after.seconds"),
        (b"created_at", b"2592001", "expires_after.seconds"),
        (b"created_at", b"an hour", "expires_after.seconds"),
        (b"created_at", b"3600.5", "expires_after.seconds"),
    ],
)
async def test_a_bad_expiry_is_refused_and_nothing_kept(
    client: httpx.AsyncClient,
    files: FileStore,
    anchor: bytes | None,
    seconds: bytes | None,
    param: str,
) -> None:
    response = await post_form(client, expiring(anchor, seconds))
    assert error_of(response, 400)["param"] == param
    assert stored(files) == []


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("purpose", ["fine-tune", "batch_output", "assistants", ""])
async def test_a_purpose_other_than_batch(
    client: httpx.AsyncClient, files: FileStore, purpose: str, first: bool
) -> None:
    parts = [("purpose", None, purpose.encode()), ("file", "x.jsonl", LINES)]
    response = await post_form(client, form(*(parts if first else parts[::-1])))
    error = error_of(response, 400)
    assert error["param"] == "purpose"
    assert error["message"] == (
        f"Invalid value for 'purpose': '{purpose}' is not supported here; "
        "the supported values are 'batch'."
    )
    assert stored(files) == []


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ([("purpose", None, b"batch")], "file"),
        ([("file", "x.jsonl", LINES)], "purpose"),
        ([("upload", "x.jsonl", LINES), ("purpose", None, b"batch")], "file"),
    ],
)
async def test_a_missing_field(
    client: httpx.AsyncClient, files: FileStore, parts: list[Any], param: str
) -> None:
    error = error_of(await post_form(client, form(*parts)), 400)
    assert error["param"] == param and error["code"] == "missing_required_parameter"
    assert error["message"] == f"Missing required parameter: '{param}'."
    assert stored(files) == []


async def test_two_files_in_one_upload(client: httpx.AsyncClient, files: FileStore) -> None:
    body = form(("file", "a", LINES), ("file", "b", LINES), ("purpose", None, b"batch"))
    error = error_of(await post_form(client, body), 400)
    assert error["param"] == "file" and "Only one file" in error["message"]
    assert stored(files) == []


async def test_a_body_that_is_not_multipart(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/files", json={"purpose": "batch", "file": "x"})
    error = error_of(response, 415)
    assert error["code"] == "unsupported_content_type"
    assert error["message"] == (
        "Unsupported content type: 'application/json'. This API method only accepts "
        "'multipart/form-data' requests."
    )
    assert error_of(await client.post("/v1/files"), 415)["message"].startswith(
        "Unsupported content type: 'none'."
    )


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", form(("file", "x", LINES)), "names no boundary"),
        (None, form(("purpose", None, b"batch"), ("file", "x", LINES), end=False), "ended before"),
        (None, b"--" + BOUNDARY.encode() + b"\r\ngarbage\x00\r\n\r\n", "malformed"),
        (None, form(("file", "x", LINES)).replace(b"name=", b"nom="), "names no field"),
    ],
)
async def test_a_malformed_form(
    client: httpx.AsyncClient, files: FileStore, content_type: str | None, body: bytes, message: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    error = error_of(await post_form(client, body, **headers), 400)
    assert message in error["message"]
    assert stored(files) == []


async def test_a_long_field_is_refused(client: httpx.AsyncClient) -> None:
    body = form(("purpose", None, b"b" * 2000), ("file", "x", LINES))
    error = error_of(await post_form(client, body), 400)
    assert error["param"] == "purpose" and "at most 1024 bytes" in error["message"]


async def test_a_file_at_the_limit_above_the_json_body_limit(
    client: httpx.AsyncClient, files: FileStore
) -> None:
    # max_body_bytes is 1024: uploads have their own limit.
    response = await upload(client, b"x" * MAX_FILE)
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == MAX_FILE


async def test_a_file_over_the_limit_by_its_stream(
    client: httpx.AsyncClient, files: FileStore
) -> None:
    error = error_of(await upload(client, b"x" * (MAX_FILE + 1)), 413)
    assert error["code"] == "file_too_large" and error["param"] == "file"
    assert error["message"] == f"The file is too large: the limit is {MAX_FILE} bytes."
    assert stored(files) == []


async def test_a_chunked_body_over_the_limit(client: httpx.AsyncClient, files: FileStore) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal sent
        yield form(("purpose", None, b"batch"), end=False)
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
        for _ in range(1000):
            sent += 1
            yield b"x" * 1024

    error = error_of(await post_form(client, body()), 413)
    assert error["code"] == "file_too_large"
    assert sent < 10  # refused as soon as it passed the limit
    assert stored(files) == []


async def test_a_declared_length_over_the_limit_is_refused_unread(
    client: httpx.AsyncClient, files: FileStore
) -> None:
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b"x"

    huge = str(MAX_FILE + 2**20)
    error = error_of(await post_form(client, body(), **{"content-length": huge}), 413)
    assert error["code"] == "file_too_large"
    assert not read
    assert stored(files) == []


async def test_an_upload_cut_short_leaves_nothing(
    client: httpx.AsyncClient, files: FileStore
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield form(("purpose", None, b"batch"), end=False)
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode()
        yield b"x" * 100
        raise ConnectionResetError("client gone")

    with pytest.raises(ConnectionResetError):
        await post_form(client, body())
    assert stored(files) == []


async def make_files_via(client: httpx.AsyncClient, count: int, **kwargs: Any) -> list[str]:
    ids = []
    for n in range(count):
        response = await upload(client, filename=f"{n}.jsonl", **kwargs)
        ids.append(response.json()["id"])
    return ids


async def test_list_pages(client: httpx.AsyncClient) -> None:
    ids = await make_files_via(client, 5)
    everything = (await client.get("/v1/files")).json()
    validate(everything, "ListFilesResponse")
    assert everything["object"] == "list" and not everything["has_more"]
    assert [f["id"] for f in everything["data"]] == ids[::-1]
    assert (everything["first_id"], everything["last_id"]) == (ids[4], ids[0])

    page = (await client.get("/v1/files", params={"limit": 2})).json()
    assert [f["id"] for f in page["data"]] == ids[4:2:-1] and page["has_more"]
    page = (await client.get("/v1/files", params={"limit": 2, "after": page["last_id"]})).json()
    assert [f["id"] for f in page["data"]] == ids[2:0:-1] and page["has_more"]

    oldest = (await client.get("/v1/files", params={"order": "asc", "limit": 4})).json()
    assert [f["id"] for f in oldest["data"]] == ids[:4] and oldest["has_more"]
    by_purpose = await client.get("/v1/files", params={"purpose": "batch_output"})
    assert by_purpose.json()["data"] == []


async def test_an_empty_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/files")
    assert response.json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"limit": 0}, "limit", "must be from 1 to 10000, not 0"),
        ({"limit": 10001}, "limit", "must be from 1 to 10000, not 10001"),
        ({"limit": "many"}, "limit", "must be an integer, not 'many'"),
        ({"order": "newest"}, "order", "must be 'asc' or 'desc', not 'newest'"),
        ({"after": "file-nonesuch"}, "after", "no file has the id 'file-nonesuch'"),
    ],
)
async def test_bad_list_parameters(
    client: httpx.AsyncClient, params: dict[str, Any], param: str, message: str
) -> None:
    error = error_of(await client.get("/v1/files", params=params), 400)
    assert error["param"] == param
    assert error["message"] == f"Invalid value for '{param}': {message}."


async def test_an_unknown_file(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/files/file-nonesuch"),
        ("GET", "/v1/files/file-nonesuch/content"),
        ("DELETE", "/v1/files/file-nonesuch"),
    ]:
        error = error_of(await client.request(method, path), 404)
        assert error["param"] == "id" and error["message"] == "No such File object: file-nonesuch"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.sqlite3")


async def test_each_key_sees_only_its_own_files(files: FileStore, store: KeyStore) -> None:
    app = make_app(access=Access(("sk-static",), store), files=files)
    alice, bob = ({"Authorization": f"Bearer {store.create().secret}"} for _ in range(2))
    static = {"Authorization": "Bearer sk-static"}
    async with make_client(app) as client:
        assert error_of(await upload(client), 401)["code"] == "invalid_api_key"
        assert error_of(await client.get("/v1/files"), 401)["code"] == "invalid_api_key"
        mine = (await upload(client, headers=alice)).json()["id"]
        assert (await client.get(f"/v1/files/{mine}", headers=alice)).status_code == 200
        for other in (bob, static):
            for method, path in [
                ("GET", f"/v1/files/{mine}"),
                ("GET", f"/v1/files/{mine}/content"),
                ("DELETE", f"/v1/files/{mine}"),
            ]:
                response = await client.request(method, path, headers=other)
                assert error_of(response, 404)["message"] == f"No such File object: {mine}"
            assert (await client.get("/v1/files", headers=other)).json()["data"] == []
            listed = await client.get("/v1/files", params={"after": mine}, headers=other)
            assert error_of(listed, 400)["param"] == "after"
        assert (await client.get(f"/v1/files/{mine}", headers=alice)).status_code == 200
        assert [f["id"] for f in (await client.get("/v1/files", headers=alice)).json()["data"]] == [
            mine
        ]


async def test_the_openai_sdk_unchanged(files: FileStore) -> None:
    app = make_app(files=files, max_file_bytes=MAX_FILE)
    client = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="sk-any",
        http_client=make_client(app),  # type: ignore[arg-type]  # plain httpx: the SDK takes it
        max_retries=0,
    )
    created = [
        await client.files.create(file=(f"{n}.jsonl", LINES), purpose="batch") for n in range(3)
    ]
    assert created[0].purpose == "batch" and created[0].bytes == len(LINES)
    expiring = await client.files.create(
        file=("e.jsonl", LINES),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 86_400},
    )
    assert expiring.expires_at == expiring.created_at + 86_400
    assert (await client.files.delete(expiring.id)).deleted
    paged = [file.id async for file in client.files.list(limit=2)]
    assert paged == [file.id for file in created[::-1]]
    assert (await client.files.retrieve(created[1].id)).filename == "1.jsonl"
    assert (await client.files.content(created[1].id)).read() == LINES
    assert (await client.files.delete(created[1].id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created[1].id)
    with pytest.raises(openai.BadRequestError):
        await client.files.create(file=("x.jsonl", LINES), purpose="fine-tune")
    with pytest.raises(openai.APIStatusError) as error:
        await client.files.create(file=("x.jsonl", b"x" * (MAX_FILE + 1)), purpose="batch")
    assert error.value.status_code == 413


async def test_a_wrong_method_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.request("PUT", "/v1/files/file-x")
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, GET"
    response = await client.request("PATCH", "/v1/files")
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"


async def test_openapi_documents_a_files_fields(client: httpx.AsyncClient) -> None:
    """expires_at is left off the wire when unset, yet stays in the documented schema."""
    document = (await client.get("/openapi.json")).json()
    schema = document["components"]["schemas"]["FileObject"]
    assert {"id", "bytes", "created_at", "filename", "purpose", "expires_at"} <= set(
        schema["properties"]
    )
