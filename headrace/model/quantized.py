"""Linear layers over weights kept as stored, computed by quantized_matmul.cpp.

Two block formats cover the GGUF types headrace serves as stored (gguf_quants.py repacks them
without changing a value): 4-bit values with a scale and a min per block of 32 (Q4_0, Q4_1,
Q4_K) and int8 values with a scale per 16 or 32 (Q8_0, Q6_K; `--quantization int8` makes the
Q8_0 layout from any checkpoint). A third format is plain 16-bit weights, IEEE half or
bfloat16, kept as stored where the activations are float32 (a CPU without native bfloat16):
half of float32's bytes, each weight widened as the kernel loads it. A step of a few rows
multiplies by them directly, reading a third to a half of bfloat16's bytes for the block
formats. A step of many rows (a prefill, a large decode batch: the *_DEQUANTIZE_ROWS below)
dequantizes each weight for the call and multiplies with torch's GEMM, which is faster there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headrace.model.operators import define_operator

__all__ = [
    "BFLOAT16_DEQUANTIZE_ROWS",
    "FLOAT32_DEQUANTIZE_ROWS",
    "HALF_AVX2_DEQUANTIZE_ROWS",
    "HALF_DEQUANTIZE_ROWS",
    "QuantizedLinear",
    "QuantizedTensor",
    "quantize_q8_0",
]

# Elements per activation block and per 4-bit weight block.
BLOCK = 32
# A part's buffers in QuantizedLinear, in QuantizedTensor's order.
_FIELDS = ("values", "scale", "min")

# Rows from which a call dequantizes its weight and multiplies with torch's GEMM (oneDNN for
# bfloat16, MKL for float32) rather than run the kernels, where whole decode steps of
# SmolLM2-135M crossed on 2 cores (docs/quantization.md): block formats under bfloat16 (AMX) at
# 24-28 rows, under float32 at 64-96 (AVX-512 and AVX2 alike: dequantizing to float32 costs
# more than the GEMM); 16-bit weights (float32) at 28-32 with AVX-512 GEMMs, 40-48 with AVX2.
BFLOAT16_DEQUANTIZE_ROWS = 24
FLOAT32_DEQUANTIZE_ROWS = 80
HALF_DEQUANTIZE_ROWS = 28
HALF_AVX2_DEQUANTIZE_ROWS = 40


# The 16-bit weight formats.
_HALVES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class QuantizedTensor:
    """A [N, K] weight in one of the formats of quantized_matmul.cpp."""

    # 4-bit: uint8 [N, K/2], block b's byte j holds element j (low nibble) and j+16 (high);
    # 8-bit: int8 [N, K]; 16-bit: float16 or bfloat16 [N, K], the weight itself.
    values: Tensor
    # float32 [N, K/group]: the scale of each group of `group` elements (16-bit: empty).
    scale: Tensor
    # float32 [N, K/32], 4-bit only (else empty): added to every element of its block.
    min: Tensor

    def __post_init__(self) -> None:
        assert self.values.dtype in (torch.uint8, torch.int8, *_HALVES)
        assert self.columns % BLOCK == 0 and BLOCK % self.group == 0

    @classmethod
    def half(cls, weight: Tensor) -> QuantizedTensor:
        """A float16 or bfloat16 [N, K] weight, kept as it is."""
        return cls(weight, torch.empty(0), torch.empty(0))

    @property
    def four_bit(self) -> bool:
        return self.values.dtype == torch.uint8

    @property
    def sixteen_bit(self) -> bool:
        return self.values.dtype in _HALVES

    @property
    def columns(self) -> int:
        return self.values.shape[1] * (2 if self.four_bit else 1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape[0], self.columns

    @property
    def group(self) -> int:
        # 16-bit weights have no scales: a "group" of one element each
        return self.columns // self.scale.shape[1] if self.scale.numel() else 1

    @property
    def format(self) -> tuple[torch.dtype, int]:
        """What a kernel call needs to be the same for all its rows."""
        return self.values.dtype, self.group

    def map_rows(self, function: Callable[[Tensor], Tensor]) -> QuantizedTensor:
        """The same weight with its rows rearranged by `function` (applied to every field)."""
        return QuantizedTensor(
            *(function(field) if field.numel() else field for field in self.fields)
        )

    @property
    def fields(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.values, self.scale, self.min

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        # -> [N, K] in dtype, computed in float32
        rows = self.values.shape[0]
        if self.sixteen_bit:
            return self.values.to(dtype)
        if self.four_bit:
            blocks = self.values.view(rows, -1, BLOCK // 2)
            low, high = blocks & 0x0F, blocks >> 4
            values = torch.cat((low, high), dim=-1).float()  # [N, K/32, 32]
            out = values * self.scale.unsqueeze(-1) + self.min.unsqueeze(-1)
        else:
            out = self.values.view(rows, -1, self.group).float() * self.scale.unsqueeze(-1)
        return out.reshape(rows, self.columns).to(dtype)


def quantize_q8_0(weight: Tensor) -> QuantizedTensor:
    """weight [N, K] as int8 with one scale per block of 32, as GGUF's Q8_0 rounds it."""
    rows, columns = weight.shape
    if columns % BLOCK:
        raise ValueError(f"int8 quantization needs rows of a multiple of {BLOCK} values")
    blocks = weight.detach().float().view(rows, -1, BLOCK)
    scale = blocks.abs().amax(dim=-1) / 127  # [N, K/32]
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    values = torch.round(blocks * inverse.unsqueeze(-1)).to(torch.int8)
    return QuantizedTensor(values.view(rows, columns), scale, torch.empty(0))


class QuantizedLinear(nn.Module):
    """nn.Linear whose weight is quantized, in parts of rows (the parts of a fused projection
    may come in different formats); without a C++ compiler it dequantizes on every call."""

    def __init__(self, parts: Sequence[QuantizedTensor], bias: Tensor | None) -> None:
        super().__init__()
        merged = _merge(parts)
        # Buffers, so that the compiled graph sees them as the module's own tensors.
        for index, part in enumerate(merged):
            self.register_buffer(f"values{index}", part.values, persistent=False)
            self.register_buffer(f"scale{index}", part.scale, persistent=False)
            self.register_buffer(f"min{index}", part.min, persistent=False)
        self.num_parts = len(merged)
        self.bias = bias
        self.in_features = merged[0].columns
        self.out_features = sum(part.values.shape[0] for part in merged)
        # Rows from which a float32 call dequantizes (bfloat16: BFLOAT16_DEQUANTIZE_ROWS),
        # decided here, where no compiled step traces it.
        self.float32_rows = (
            (HALF_AVX2_DEQUANTIZE_ROWS if _avx2_gemms() else HALF_DEQUANTIZE_ROWS)
            if all(part.sixteen_bit for part in merged)
            else FLOAT32_DEQUANTIZE_ROWS
        )

    @property
    def parts(self) -> list[QuantizedTensor]:
        return [
            QuantizedTensor(*(getattr(self, f"{field}{index}") for field in _FIELDS))
            for index in range(self.num_parts)
        ]

    def forward(self, x: Tensor) -> Tensor:
        # x: [T, K] -> [T, N]
        values, scales, mins = (
            [getattr(self, f"{field}{index}") for index in range(self.num_parts)]
            for field in _FIELDS
        )
        rows = self.float32_rows if x.dtype == torch.float32 else BFLOAT16_DEQUANTIZE_ROWS
        out: Tensor = torch.ops.headrace.quantized_linear(x, values, scales, mins, self.bias, rows)
        return out

    def dequantize(self, dtype: torch.dtype) -> Tensor:
        # -> the whole weight [N, K] in dtype
        return _dequantized(self.parts, dtype)


def _dequantized(parts: Sequence[QuantizedTensor], dtype: torch.dtype) -> Tensor:
    # -> the parts' rows stacked [N, K] in dtype, by torch's operators
    return torch.cat([part.dequantize(dtype) for part in parts])


def _merge(parts: Sequence[QuantizedTensor]) -> list[QuantizedTensor]:
    # Adjacent parts of one format become one part: one kernel call for all of them.
    merged = [parts[0]]
    for part in parts[1:]:
        last = merged[-1]
        if part.format != last.format:
            merged.append(part)
            continue
        merged[-1] = QuantizedTensor(
            *(torch.cat(pair) for pair in zip(last.fields, part.fields, strict=True))
        )
    return merged


@functools.cache
def _avx2_gemms() -> bool:
    # Whether torch's kernels stop short of AVX-512 here (the CPU, or ATEN_CPU_CAPABILITY)
    return torch.backends.cpu.get_cpu_capability() != "AVX512"


def _quantized_linear(
    x: Tensor,
    values: list[Tensor],
    scales: list[Tensor],
    mins: list[Tensor],
    bias: Tensor | None,
    dequantize_rows: int,
) -> Tensor:
    # Where operators.cpp cannot run (another device, no compiler): always torch's GEMM.
    parts = [QuantizedTensor(*fields) for fields in zip(values, scales, mins, strict=True)]
    return F.linear(x, _dequantized(parts, x.dtype), bias)


def _quantized_linear_shape(
    x: Tensor,
    values: list[Tensor],
    scales: list[Tensor],
    mins: list[Tensor],
    bias: Tensor | None,
    dequantize_rows: int,
) -> Tensor:
    return x.new_empty(x.shape[0], sum(v.shape[0] for v in values))


# An operator, so that torch.compile calls the kernels rather than tracing them. On the CPU
# (operators.cpp) it runs quantized_matmul.cpp's kernels for calls of fewer than
# `dequantize_rows` tokens, and otherwise dequantizes the weight for the call.
define_operator(
    "quantized_linear(Tensor x, Tensor[] values, Tensor[] scales, Tensor[] mins, Tensor? bias,"
    " int dequantize_rows) -> Tensor",
    _quantized_linear,
    _quantized_linear_shape,
    in_cpp=True,
)
