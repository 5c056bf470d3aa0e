"""`headrace serve` drains on SIGTERM, then exits with status 0.

A real server process, on a tiny random model: the running stream finishes with [DONE] while new
requests get a 503.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.model.factories import make_hf_model, save_hf
from tests.text.factories import make_tokenizer_dir

START_TIMEOUT_S = 120
# Tokens the running stream generates: enough to outlast the checks made while it runs (about
# 1 s on an idle machine, against some 10 ms), few enough to end well within the drain even on a
# loaded one.
STREAM_TOKENS = 1000
DRAIN_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the tiny real tokenizer: quick to load and to run."""
    path = tmp_path_factory.mktemp("model")
    save_hf(make_hf_model(vocab_size=512, max_position_embeddings=4096), path)
    return make_tokenizer_dir(path)


@pytest.fixture
def server(model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with serving(model_dir, tmp_path) as started:
        yield started


@contextmanager
def serving(
    model_dir: Path, tmp_path: Path, *flags: str, cert: Path | None = None, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`headrace serve` on the tiny model with `flags` (HTTPS, checked against `cert`, when
    given) and `env` added to its environment; killed after."""
    port = free_port()
    command = [sys.executable, "-m", "headrace", "serve", "--model", str(model_dir),
               "--port", str(port), "--device", "cpu", "--served-model-name", "tiny",
               "--drain-timeout", str(DRAIN_TIMEOUT_S),
               "--data-dir", str(tmp_path / "data"), *flags]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as out:
        # One torch thread: a tiny model gains nothing from more, and a busy machine's cores
        # would only slow their rendezvous down.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"{'https' if cert else 'http'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        trust = ssl.create_default_context(cafile=cert) if cert else True
        while not is_up(url, trust):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield process, url
    finally:
        process.kill()
        process.wait()


def is_up(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(f"{url}/health", verify=verify).status_code == 200
    except httpx.TransportError:
        return False


def chat(**fields: object) -> dict[str, object]:
    return {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_sigterm_drains_then_exits_cleanly(server: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = server
    body = chat(stream=True, max_tokens=STREAM_TOKENS, ignore_eos=True)
    client = httpx.Client(base_url=url, timeout=60)
    with client, client.stream("POST", "/v1/chat/completions", json=body) as stream:
        events = stream.iter_lines()
        assert next(events).startswith("data: ")
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (health := client.get("/health")).status_code == 200:
            assert time.monotonic() < deadline, "SIGTERM did not start a drain"
            time.sleep(0.01)
        refused = client.post("/v1/chat/completions", json=chat())
        rest = [line for line in events if line]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert rest[-1] == "data: [DONE]"
    last = orjson.loads(rest[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "length"
    assert process.wait(timeout=30) == 0


def test_sigterm_while_the_decode_step_compiles_exits_cleanly(
    model_dir: Path, tmp_path: Path
) -> None:
    """The compile cannot be stopped, and the interpreter's exit could abort under its thread
    (status 134): the server exits at once, with 0, once it has stopped serving."""
    # An empty compile cache: the compile takes many seconds more than the test.
    inductor = str(tmp_path / "inductor")
    flags = ("--log-level", "debug")  # the exit's line is a debug one
    with serving(model_dir, tmp_path, *flags, TORCHINDUCTOR_CACHE_DIR=inductor) as (process, url):
        assert httpx.get(f"{url}/health").json()["compiling"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "exiting without waiting for headrace-compile" in (tmp_path / "server.log").read_text()


def test_a_start_ends_with_a_curl_command_that_works(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    """Once the server listens (after uvicorn's own lines) it says where, and prints a
    command a person can paste. (The compile thread's lines may still follow.)"""
    lines = (tmp_path / "server.log").read_text().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert first("Uvicorn running on") < first("serving tiny on http://127.0.0.1:")
    assert first("serving tiny on") < first("try it: ")
    command = lines[first("try it: ")].partition("try it: ")[2]
    assert command.startswith("curl ")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["object"] == "chat.completion"


def test_https_with_a_key_and_certificate(model_dir: Path, tmp_path: Path) -> None:
    """--ssl-keyfile and --ssl-certfile: the API over TLS, as the OpenAI SDK reaches it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    flags = ("--ssl-keyfile", str(key), "--ssl-certfile", str(cert))
    with serving(model_dir, tmp_path, *flags, cert=cert) as (_, url):
        client = openai.OpenAI(
            base_url=f"{url}/v1",
            api_key="unused",
            http_client=httpx.Client(verify=ssl.create_default_context(cafile=cert)),
        )
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer there
            httpx.get(url.replace("https://", "http://") + "/health")
    assert f"serving tiny on {url}/v1" in (tmp_path / "server.log").read_text()
