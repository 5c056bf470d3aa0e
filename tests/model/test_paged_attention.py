"""The C++ decode attention agrees with torch's operators over the same paged cache."""

from __future__ import annotations

import pytest
import torch

from headrace.model import attention, native

HEADS, KV_HEADS, BLOCK_SIZE, NUM_BLOCKS = 6, 2, 4, 256


def decode_case(lengths: list[int], dtype: torch.dtype, dim: int = 16) -> tuple[torch.Tensor, ...]:
    """n decodes over interleaved blocks; q, k and v are views of one projection, as in models."""
    generator = torch.Generator().manual_seed(len(lengths) * 100 + lengths[-1])
    n = len(lengths)
    width = max(-(-length // BLOCK_SIZE) for length in lengths)
    blocks = 1 + torch.randperm(NUM_BLOCKS - 1, generator=generator)[: n * width]
    tables = blocks.view(n, width)
    lens = torch.tensor(lengths)
    last = lens - 1
    slots = tables[torch.arange(n), last // BLOCK_SIZE] * BLOCK_SIZE + last % BLOCK_SIZE
    qkv = torch.randn(n, HEADS + 2 * KV_HEADS, dim, generator=generator).to(dtype)
    q, k, v = torch.split(qkv, [HEADS, KV_HEADS, KV_HEADS], dim=1)
    shape = (NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, dim)
    k_cache = torch.randn(shape, generator=generator).to(dtype)
    v_cache = torch.randn(shape, generator=generator).to(dtype)
    return q, k, v, k_cache, v_cache, slots, tables, lens


def on_torch(case: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode attention on torch's operators; the output and the caches it wrote to."""
    q, k, v, k_cache, v_cache, slots, tables, lens = (x.clone() for x in case)
    out = attention._decode_attention(q, k, v, k_cache, v_cache, slots, tables, lens)
    return out, k_cache, v_cache


# Head sizes of 64 and 128 run loops of a fixed length, any other one a loop of any.
@pytest.mark.parametrize("dim", [16, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "lengths",
    [
        [1],
        [37],
        [5, 64, 17],
        [4, 8, 12, 16],
        [3, 9, 1, 28, 7, 22, 2, 15, 11],
        # Few and long: split into spans of positions, merged as flash-decoding's are.
        [300],
        [200, 3, 150],
    ],
)
def test_kernel_agrees_with_torch(dtype: torch.dtype, lengths: list[int], dim: int) -> None:
    assert native.cpu_operators(), "the C++ operators did not build"
    case = decode_case(lengths, dtype, dim)
    expected, k_ref, v_ref = on_torch(case)
    q, k, v, k_cache, v_cache, slots, tables, lens = case
    out = torch.ops.headrace.decode_attention(q, k, v, k_cache, v_cache, slots, tables, lens)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)  # the same writes
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)
