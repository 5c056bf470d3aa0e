"""`headrace serve` refuses what it cannot serve with one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "headrace", "serve", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-org/no-such-model"], "fetching it from the Hugging Face hub failed"),
        (["--model", "/no/such/model.gguf"], "neither an existing path nor a hub id"),
        (["--max-model-len", "4"], "max_model_len must be at least 16"),
        (["--served-model-name", "a", "a"], "served model names must be distinct"),
        (["--max-num-seqs", "0"], "max_num_seqs must be positive"),
        (["--block-size", "12"], "block_size must be 8, 16, 32, 64 or 128"),
        (["--kv-cache-memory", "0"], "must be a positive number of GiB, not 0"),
        (["--kv-cache-memory", "inf"], "must be a positive number of GiB, not inf"),
        (["--kv-cache-memory", "-1"], "must be a positive number of GiB, not -1"),
        (["--kv-cache-memory", "lots"], "must be a positive number of GiB, not lots"),
        (["--drain-timeout", "-1"], "drain_timeout must be 0 or more seconds, not -1.0"),
    ],
)
def test_bad_configuration_is_one_line(args: list[str], message: str) -> None:
    done = serve(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith(("headrace: error: ", "headrace serve: error: "))
    assert message in done.stderr


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    done = serve("--model", str(weights))
    assert done.returncode == 2 and "is not a .gguf file" in done.stderr


def test_max_model_len_beyond_the_model(default_model_path: Path) -> None:
    done = serve("--model", str(default_model_path), "--max-model-len", "100000")
    assert done.returncode == 2 and "exceeds the model's context length 8192" in done.stderr


def test_a_kv_cache_too_small_for_one_context(default_model_path: Path) -> None:
    done = serve("--model", str(default_model_path), "--kv-cache-memory", "0.01")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "give --kv-cache-memory more or lower --max-model-len" in done.stderr
