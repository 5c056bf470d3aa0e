"""`headrace batch INPUT.jsonl -o OUTPUT.jsonl` on the real default model: every result in
input order with bodies as the API's schema has them, a request naming an unknown model failing
alone with 404, and a bad file refused before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import MAX_MODEL_LEN, MODEL_NAMES, START_TIMEOUT_S
from tests.e2e.test_batches import line
from tests.schema import validate

pytestmark = pytest.mark.e2e


def headrace_batch(source: Path, output: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "headrace", "batch", str(source), "-o", str(output),
        "--served-model-name", MODEL_NAMES[0], "--max-model-len", str(MAX_MODEL_LEN), *flags,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S)


def test_a_batch_file_runs_offline(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(
        line("greedy", temperature=0)
        + line("seeded", seed=1)
        + line("unknown", model="no-such-model")
        + line("longer", max_tokens=4, temperature=0)
    )
    done = headrace_batch(source, output, "--max-num-seqs", "2")
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(text) for text in output.read_bytes().splitlines()]
    assert [o["custom_id"] for o in lines] == ["greedy", "seeded", "unknown", "longer"]
    tokens = 0
    for result in lines:
        assert result["id"].startswith("batch_req_") and result["error"] is None
        body = result["response"]["body"]
        if result["custom_id"] == "unknown":
            assert result["response"]["status_code"] == 404
            validate(body, "ErrorResponse")
            assert body["error"]["code"] == "model_not_found"
            continue
        assert result["response"]["status_code"] == 200
        validate(body, "CreateChatCompletionResponse")
        assert body["model"] == MODEL_NAMES[0] and body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] <= 8
        tokens += body["usage"]["completion_tokens"]
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"headrace: 4 requests, 1 failed, {tokens} completion tokens in ")
    assert not list(tmp_path.glob(".*.partial"))


def test_a_bad_batch_file_exits_1_with_its_errors(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(line("a") + b"{oops\n" + line("a"))
    done = headrace_batch(source, output)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{source}:2: invalid_json_line:" in done.stderr
    assert f"{source}:3: duplicate_custom_id:" in done.stderr
    assert not output.exists()
