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
    ],
)
def test_bad_configuration_is_one_line(args: list[str], message: str) -> None:
    done = serve(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("headrace: error: ")
    assert message in done.stderr


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    done = serve("--model", str(weights))
    assert done.returncode == 2 and "is not a .gguf file" in done.stderr


def test_max_model_len_beyond_the_model(default_model_path: Path) -> None:
    done = serve("--model", str(default_model_path), "--max-model-len", "100000")
    assert done.returncode == 2 and "exceeds the model's context length 8192" in done.stderr
