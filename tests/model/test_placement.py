"""The dtype a configuration resolves to, on CPUs with and without native bfloat16."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from headrace.config import Dtype
from headrace.model import placement
from headrace.model.placement import dtype_reason, resolve_dtype

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_the_cpu_is_bfloat16_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(placement, "cpu_has_native_bfloat16", lambda: native)
    assert resolve_dtype("auto", CPU) == expected


def test_auto_on_cuda_is_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "cpu_has_native_bfloat16", lambda: False)
    assert resolve_dtype("auto", CUDA) == torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("device", [CPU, CUDA])
def test_an_explicit_dtype_is_kept(
    monkeypatch: pytest.MonkeyPatch, native: bool, device: torch.device
) -> None:
    monkeypatch.setattr(placement, "cpu_has_native_bfloat16", lambda: native)
    assert resolve_dtype("float32", device) == torch.float32
    assert resolve_dtype("bfloat16", device) == torch.bfloat16


@pytest.mark.parametrize(
    ("variable", "value"), [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")]
)
def test_a_cap_below_avx512_rules_out_native_bfloat16(variable: str, value: str) -> None:
    # Both variables are read when torch starts or by oneDNN itself: a fresh interpreter.
    code = "from headrace.model.placement import cpu_has_native_bfloat16 as f; print(f())"
    env = {**os.environ, variable: value}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize(
    ("dtype", "device", "native", "reason"),
    [
        ("bfloat16", CPU, False, "as asked"),
        ("auto", CUDA, False, "CUDA"),
        ("auto", CPU, True, "natively"),
        ("auto", CPU, False, "no native bfloat16"),
    ],
)
def test_the_start_log_says_why(
    monkeypatch: pytest.MonkeyPatch, dtype: Dtype, device: torch.device, native: bool, reason: str
) -> None:
    monkeypatch.setattr(placement, "cpu_has_native_bfloat16", lambda: native)
    assert reason in dtype_reason(dtype, device)
