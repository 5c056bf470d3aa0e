"""The weights kept as stored: GGUF blocks repacked exactly, and the C++ matmuls against the
dequantized reference, built for this CPU, for AVX2 (x86-64-v3) and without vectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from headrace.model import native, quantized
from headrace.model.gguf_quants import repack
from headrace.model.quantized import (
    BFLOAT16_DEQUANTIZE_ROWS,
    FLOAT32_DEQUANTIZE_ROWS,
    HALF_AVX2_DEQUANTIZE_ROWS,
    HALF_DEQUANTIZE_ROWS,
    QuantizedLinear,
    QuantizedTensor,
    quantize_q8_0,
)

Q = GGMLQuantizationType
TYPES = [Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q8_0, Q.Q6_K, Q.F16, Q.BF16]
# Targets the kernels are built for: this CPU, the AVX2 floor, and plain x86-64 (scalar loops).
MARCHES = ["native", "x86-64-v3", "x86-64"]
DTYPES = [torch.float32, torch.bfloat16]
ROWS, COLUMNS = 40, 512
# Rows that dequantize on any CPU, in any dtype.
GEMM_ROWS = 3 + max(
    BFLOAT16_DEQUANTIZE_ROWS,
    FLOAT32_DEQUANTIZE_ROWS,
    HALF_DEQUANTIZE_ROWS,
    HALF_AVX2_DEQUANTIZE_ROWS,
)


def raw_blocks(kind: GGMLQuantizationType, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """A GGUF tensor's bytes: quantized by gguf where it can, else random with sane scales."""
    rng = np.random.default_rng(seed)
    if kind in (Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16, Q.BF16):
        return quantize(rng.standard_normal((rows, columns)).astype(np.float32), kind)
    size, scale_bytes = {Q.Q4_K: (144, [0, 2]), Q.Q6_K: (210, [208])}[kind]
    blocks = rng.integers(0, 256, size=(rows, columns // 256, size), dtype=np.uint8)
    for start in scale_bytes:  # f16 scales of a plausible size, never inf or nan
        scales = (rng.random((rows, columns // 256)) * 0.02).astype(np.float16)
        blocks[..., start : start + 2] = scales.view(np.uint8).reshape(rows, -1, 2)
    return blocks.reshape(rows, -1)


def reference(kind: GGMLQuantizationType, raw: np.ndarray, rows: int) -> torch.Tensor:
    return torch.from_numpy(dequantize(raw, kind).reshape(rows, -1).astype(np.float32))


def quantized_activations(x: torch.Tensor) -> torch.Tensor:
    # x as the kernels see it: int8 per block of 32 with scale max|x| / 127, back in float64
    blocks = x.double().view(x.shape[0], -1, 32)
    scale = blocks.abs().amax(-1, keepdim=True) / 127
    return (torch.round(blocks / scale.clamp(min=1e-300)) * scale).view(x.shape)


@pytest.fixture(scope="module", params=TYPES, ids=lambda kind: kind.name)
def weight(request: pytest.FixtureRequest) -> tuple[QuantizedTensor, torch.Tensor]:
    kind = request.param
    raw = raw_blocks(kind, ROWS, COLUMNS)
    return repack(raw, kind, ROWS), reference(kind, raw, ROWS)


def test_repacking_keeps_every_value(weight: tuple[QuantizedTensor, torch.Tensor]) -> None:
    packed, expected = weight
    assert torch.equal(packed.dequantize(), expected)


@pytest.fixture(params=MARCHES)
def march(request: pytest.FixtureRequest) -> Iterator[str]:
    """The C++ operators bound to kernels built for each target in turn."""
    assert native.cpu_operators(), "the C++ operators did not build"
    native.bind_kernels(request.param)
    yield request.param
    native.bind_kernels(native.kernel_target())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_dequantizes_as_torch_does(
    weight: tuple[QuantizedTensor, torch.Tensor], march: str, dtype: torch.dtype
) -> None:
    # From GEMM_ROWS tokens the operator dequantizes in C++ and multiplies with torch's GEMM:
    # the same weight, so the same product bit for bit.
    packed, expected = weight
    x = torch.randn(GEMM_ROWS, COLUMNS).to(dtype)
    got = QuantizedLinear([packed], None)(x)
    assert torch.equal(got, torch.nn.functional.linear(x, expected.to(dtype)))


@pytest.mark.parametrize("tokens", [1, 3, 4, 9])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_matches_the_dequantized_reference(
    weight: tuple[QuantizedTensor, torch.Tensor], march: str, dtype: torch.dtype, tokens: int
) -> None:
    packed, expected_weight = weight
    x = torch.randn(tokens, COLUMNS, generator=torch.Generator().manual_seed(tokens)).to(dtype)
    # The second part of a fused projection, so written into columns 3.. of the output.
    first = quantize_q8_0(torch.randn(3, COLUMNS))
    parts = [first, packed]
    fields = zip(*(part.fields for part in parts), strict=True)
    values, scales, mins = (list(field) for field in fields)
    out = torch.ops.headrace.quantized_linear(x, values, scales, mins, None, GEMM_ROWS)
    # Against the activations the kernel multiplies (block formats: int8, 16-bit: x itself) the
    # rounding is only float summation's; against x, that of 8-bit activations (about 0.4%).
    multiplied = x.double() if packed.sixteen_bit else quantized_activations(x)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for got, exact in (
        (out[:, 3:], multiplied @ expected_weight.double().T),
        (out[:, :3], quantized_activations(x) @ first.dequantize().double().T),
    ):
        assert (got.double() - exact).abs().max() <= tolerance * exact.abs().max()
    plain = x.double() @ expected_weight.double().T
    assert (out[:, 3:].double() - plain).abs().max() <= 0.03 * plain.abs().max()


def test_int8_quantization_rounds_to_the_nearest_step() -> None:
    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    weight[0, :32] = 0  # an all-zero block keeps a zero scale
    q = quantize_q8_0(weight)
    assert q.group == 32 and q.values.dtype == torch.int8
    assert q.values.abs().max() == 127 and torch.all(q.scale[0, 0] == 0)
    step = q.scale.repeat_interleave(32, dim=1)
    assert torch.all((q.dequantize() - weight).abs() <= step / 2 + 1e-7)


def test_int8_quantization_needs_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q8_0(torch.zeros(4, 48))


def mixed_linear(bias: bool) -> tuple[QuantizedLinear, torch.Tensor]:
    # A fused projection whose parts come in three formats: q (Q4_1), k (Q4_0), v (Q6_K).
    kinds = [(Q.Q4_1, 24), (Q.Q4_0, 8), (Q.Q6_K, 16)]
    raws = [(kind, raw_blocks(kind, rows, 256, seed=rows), rows) for kind, rows in kinds]
    parts = [repack(raw, kind, rows) for kind, raw, rows in raws]
    weight = torch.cat([reference(kind, raw, rows) for kind, raw, rows in raws])
    linear = QuantizedLinear(parts, torch.randn(48) if bias else None)
    return linear, weight


def test_adjacent_parts_of_one_format_share_a_call() -> None:
    linear, weight = mixed_linear(bias=False)
    assert [part.values.shape[0] for part in linear.parts] == [32, 16]  # Q4_1 + Q4_0, Q6_K
    assert torch.equal(linear.dequantize(torch.float32), weight)


@pytest.mark.parametrize("tokens", [1, 5, GEMM_ROWS])
def test_linear_over_parts_matches_its_dequantized_weight(tokens: int) -> None:
    linear, weight = mixed_linear(bias=True)
    x = torch.randn(tokens, 256)
    expected = torch.nn.functional.linear(x, weight, linear.bias)
    torch.testing.assert_close(linear(x), expected, atol=0.02 * expected.abs().max(), rtol=0)


def dequantizes(linear: QuantizedLinear, x: torch.Tensor) -> bool:
    """Whether the quantized operator dequantizes the weight for torch's GEMM on this call."""
    with torch.profiler.profile() as profile:
        linear(x)
    return any(event.name == "aten::linear" for event in profile.events())


def test_block_formats_dequantize_later_under_float32_than_bfloat16() -> None:
    linear, _ = mixed_linear(bias=False)
    rows = BFLOAT16_DEQUANTIZE_ROWS + 2
    assert not dequantizes(linear, torch.randn(rows, 256))  # until FLOAT32_DEQUANTIZE_ROWS
    assert dequantizes(linear, torch.randn(rows, 256).bfloat16())
    assert not dequantizes(linear, torch.randn(BFLOAT16_DEQUANTIZE_ROWS - 1, 256).bfloat16())
    assert dequantizes(linear, torch.randn(FLOAT32_DEQUANTIZE_ROWS, 256))


@pytest.mark.parametrize("avx2_gemms", [True, False])
def test_16_bit_weights_dequantize_later_where_torchs_gemms_are_avx2(
    monkeypatch: pytest.MonkeyPatch, avx2_gemms: bool
) -> None:
    monkeypatch.setattr(quantized, "_avx2_gemms", lambda: avx2_gemms)
    linear = QuantizedLinear([QuantizedTensor.half(torch.randn(48, 256).half())], None)
    assert dequantizes(linear, torch.randn(HALF_DEQUANTIZE_ROWS + 2, 256)) != avx2_gemms


def test_the_compiled_step_calls_the_kernel_without_recompiling() -> None:
    linear, _ = mixed_linear(bias=True)
    compiled = torch.compile(linear, dynamic=True)
    with torch.inference_mode():
        for tokens in (2, 3):
            x = torch.randn(tokens, 256)
            torch._dynamo.mark_dynamic(x, 0)
            torch.testing.assert_close(compiled(x), linear(x))
        with torch.compiler.set_stance("fail_on_recompile"):
            for tokens in (7, GEMM_ROWS):  # the kernels, then torch's GEMM
                x = torch.randn(tokens, 256)
                torch.testing.assert_close(compiled(x), linear(x))
