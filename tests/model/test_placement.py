"""The dtype a configuration resolves to, on CPUs with and without native bfloat16."""

from __future__ import annotations

import pytest
import torch

from headrace.model import placement
from headrace.model.placement import resolve_dtype

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
