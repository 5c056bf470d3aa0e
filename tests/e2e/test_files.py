"""The Files API on the real server, through the real OpenAI SDK: uploads streamed to the data
directory, pages, downloads byte for byte, deletes, and each key's files its own."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from headrace.auth import KeyStore
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

LINE = b'{"custom_id": "%d", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def data_files(server: Server) -> set[str]:
    """The names in the server's files directory (running_server puts it beside its log)."""
    return set(os.listdir(server.log.parent / "data" / "files"))


def test_upload_list_retrieve_download_delete(server: Server, tmp_path: Path) -> None:
    client = server.sdk()
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(LINE % n for n in range(100)))
    from_path = client.files.create(file=path, purpose="batch")
    assert (from_path.filename, from_path.bytes) == ("requests.jsonl", path.stat().st_size)
    assert from_path.purpose == "batch" and from_path.object == "file"
    others = [client.files.create(file=(f"{n}.jsonl", LINE % n), purpose="batch") for n in range(3)]
    ours = {from_path.id, *(file.id for file in others)}
    assert ours <= data_files(server)

    # limit=2 pages through them, newest first, following has_more and after=last_id.
    listed = [file.id for file in client.files.list(limit=2) if file.id in ours]
    assert listed == [file.id for file in [*others[::-1], from_path]]
    oldest_first = client.files.list(order="asc", purpose="batch")
    assert [f.id for f in oldest_first.data if f.id in ours] == [
        from_path.id,
        *(f.id for f in others),
    ]

    assert client.files.retrieve(others[1].id) == others[1]
    assert client.files.content(from_path.id).read() == path.read_bytes()

    deleted = client.files.delete(from_path.id)
    assert deleted.id == from_path.id and deleted.deleted
    assert from_path.id not in data_files(server)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(from_path.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(from_path.id)


def test_a_file_past_the_json_body_limit(server: Server) -> None:
    client = server.sdk()
    data = os.urandom(12 * 2**20)  # the JSON routes take 8 MiB at most
    file = client.files.create(file=("big.jsonl", data), purpose="batch")
    assert file.bytes == len(data)
    assert client.files.content(file.id).read() == data
    client.files.delete(file.id)


def test_a_purpose_other_than_batch(server: Server) -> None:
    before = data_files(server)
    with pytest.raises(openai.BadRequestError) as error:
        server.sdk().files.create(file=("x.jsonl", LINE % 0), purpose="fine-tune")
    assert error.value.param == "purpose"
    assert data_files(server) == before


def test_each_key_sees_only_its_own_files(server: Server) -> None:
    store = KeyStore(server.key_store)
    alice, bob = server.sdk(store.create().secret), server.sdk(store.create().secret)
    store.close()
    mine = alice.files.create(file=("mine.jsonl", LINE % 0), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.delete(mine.id)
    assert mine.id not in {file.id for file in bob.files.list()}
    assert [file.id for file in alice.files.list()] == [mine.id]
    alice.files.delete(mine.id)


def test_a_declared_length_over_the_limit_is_refused_before_the_body(server: Server) -> None:
    """413 at once, with not one byte of the (absent) 1 TB body sent."""
    url = urlparse(server.url)
    request = (
        "POST /v1/files HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n"
        f"Authorization: Bearer {server.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {10**12}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request.encode())
        status_line = sock.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
