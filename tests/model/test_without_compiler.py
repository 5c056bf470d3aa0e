"""Loading headrace's C++ leaves the process's arithmetic alone; without a C++ compiler its
operators run on torch's own: slower, never wrong (in a process of its own, since a process
that has loaded the C++ operators keeps them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from headrace.model import native

SCRIPT = """
import torch
import torch.nn.functional as F
from headrace.model import attention, native  # attention defines decode_attention
from headrace.model.quantized import QuantizedLinear, quantize_q8_0

linear = QuantizedLinear([quantize_q8_0(torch.randn(48, 256))], torch.randn(48))
x = torch.randn(3, 256)
# The kernels would round x to int8 blocks: only torch's GEMM gives the float product exactly.
assert torch.equal(linear(x), F.linear(x, linear.dequantize(torch.float32), linear.bias))

# Two sequences of 5 and 2 positions decode a token each; blocks of 4, 2 heads on 1 kv head.
k_cache, v_cache = torch.randn(2, 8, 4, 1, 16).unbind(0)
tables = torch.tensor([[3, 5], [7, 0]])
lens = torch.tensor([5, 2])
slots = torch.tensor([5 * 4 + 0, 7 * 4 + 1])
q, k, v = torch.randn(3, 2, 2, 16).unbind(0)
k, v = k[:, :1], v[:, :1]
out = torch.ops.headrace.decode_attention(q, k, v, k_cache, v_cache, slots, tables, lens)
for i, positions in enumerate([[12, 13, 14, 15, 20], [28, 29]]):
    keys = k_cache.view(-1, 16)[positions]
    values = v_cache.view(-1, 16)[positions]
    assert torch.equal(keys[-1], k[i, 0]) and torch.equal(values[-1], v[i, 0])
    expected = torch.softmax(q[i] @ keys.T / 4, dim=-1) @ values
    torch.testing.assert_close(out[i], expected)
assert not native.cpu_operators()
"""


def test_without_a_compiler_the_operators_run_on_torch(tmp_path: Path) -> None:
    environment = {**os.environ, "CXX": "/no/such/g++", "XDG_CACHE_HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "building paged_attention.cpp failed, using torch's operators" in run.stderr


def test_loading_the_kernels_keeps_subnormal_numbers() -> None:
    # A library linked with -ffast-math would switch the process to flush-to-zero as it loads,
    # changing every float operation that meets a subnormal number, torch's included.
    assert native.cpu_operators()
    tiny = torch.tensor([1e-40])
    assert (tiny * 1.0).item() != 0 and tiny.item() != 0
