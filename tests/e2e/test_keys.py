"""Keys from `headrace keys`, made and revoked while the real server runs, with their limits."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest

from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e


def headrace_keys(server: Server, *args: str) -> str:
    """`headrace keys ARGS` on the server's key store; its output."""
    command, *rest = args
    store = ["--key-store", str(server.key_store)]
    done = subprocess.run(
        [sys.executable, "-m", "headrace", "keys", command, *store, *rest],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_a_key_with_limits_from_creation_to_revocation(server: Server) -> None:
    key = headrace_keys(server, "create", "--models", MODEL_NAMES[0], "--rpm", "3", "--tpm", "900")
    client = server.sdk(key)
    listed = client.models.with_raw_response.list()
    assert [model.id for model in listed.parse()] == [MODEL_NAMES[0]]
    assert listed.headers["x-ratelimit-limit-requests"] == "3"
    assert listed.headers["x-ratelimit-remaining-requests"] == "2"
    assert listed.headers["x-ratelimit-limit-tokens"] == "900"
    completion = client.chat.completions.with_raw_response.create(
        model=MODEL_NAMES[0], messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert completion.parse().usage is not None
    # The prompt and max_tokens were taken; the bucket refills 15 a second meanwhile.
    assert int(completion.headers["x-ratelimit-remaining-tokens"]) < 900
    with pytest.raises(openai.NotFoundError) as not_found:
        client.models.retrieve(MODEL_NAMES[1])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.RateLimitError) as limited:
        client.models.list()
    assert limited.value.type == "requests" and limited.value.response.headers["retry-after"]
    key_id = headrace_keys(server, "list").splitlines()[-1].split()[0]
    headrace_keys(server, "revoke", key_id)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        client.models.list()


def test_the_static_key_still_works_beside_the_store(server: Server) -> None:
    assert [model.id for model in server.sdk(server.api_key).models.list()] == list(MODEL_NAMES)
