"""GGUF's quantized blocks repacked, value for value, into quantized_matmul.cpp's two block
formats; 16-bit matrices (F16, BF16) are taken as they are.

  Q4_0  18 bytes / 32: d (f16), 16 bytes of nibbles          w = d * q - 8 d
  Q4_1  20 bytes / 32: d, m (f16), 16 bytes of nibbles       w = d * q + m
  Q4_K 144 bytes / 256: d, dmin (f16), 8 six-bit scales and mins in 12 bytes, 128 bytes of
        nibbles; sub-block s of 32:                           w = d sc_s * q - dmin m_s
  Q8_0  34 bytes / 32: d (f16), 32 int8                       w = d * q
  Q6_K 210 bytes / 256: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, d (f16);
        group s of 16:                                        w = d sc_s * (q - 32)

Every scale and min is kept in float32, where the products above (an f16 times an integer of at
most 8 bits) are exact, so the repacked weight dequantizes to GGUF's own values.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType

from headrace.model.quantized import BLOCK, QuantizedTensor

__all__ = ["SERVED_AS_STORED", "SIXTEEN_BIT", "repack"]

_Q = GGMLQuantizationType
# The quantized GGUF types whose projections run on the quantized kernels.
SERVED_AS_STORED = frozenset({_Q.Q4_0, _Q.Q4_1, _Q.Q4_K, _Q.Q8_0, _Q.Q6_K})
# The 16-bit types, which run on them where the activations are float32.
SIXTEEN_BIT = {_Q.F16: torch.float16, _Q.BF16: torch.bfloat16}


def repack(data: np.ndarray, kind: GGMLQuantizationType, rows: int) -> QuantizedTensor:
    """A GGUF tensor's raw bytes (`rows` rows of blocks) as a QuantizedTensor."""
    blocks = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)
    if kind in SIXTEEN_BIT:
        return QuantizedTensor.half(torch.from_numpy(blocks.copy()).view(SIXTEEN_BIT[kind]))
    if kind == _Q.Q4_0:
        d = _f16(blocks[:, 0::18], blocks[:, 1::18])
        return _four_bit(_nibbles(_fields(blocks, 18, 2, 18)), d, -8 * d)
    if kind == _Q.Q4_1:
        d = _f16(blocks[:, 0::20], blocks[:, 1::20])
        m = _f16(blocks[:, 2::20], blocks[:, 3::20])
        return _four_bit(_nibbles(_fields(blocks, 20, 4, 20)), d, m)
    if kind == _Q.Q4_K:
        return _q4_k(blocks.reshape(rows, -1, 144))
    if kind == _Q.Q8_0:
        d = _f16(blocks[:, 0::34], blocks[:, 1::34])
        values = _fields(blocks, 34, 2, 34).view(np.int8).reshape(rows, -1)
        return QuantizedTensor(torch.from_numpy(values.copy()), _tensor(d), torch.empty(0))
    if kind == _Q.Q6_K:
        return _q6_k(blocks.reshape(rows, -1, 210))
    raise ValueError(f"GGUF type {kind.name} is not served as stored")


def _q4_k(blocks: np.ndarray) -> QuantizedTensor:
    # blocks: [N, S, 144] super-blocks
    rows, supers = blocks.shape[:2]
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)  # [N, S, 1]
    dmin = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
    packed = blocks[..., 4:16].reshape(rows, supers, 3, 4)
    low, high, rest = packed[:, :, 0], packed[:, :, 1], packed[:, :, 2]
    sc = np.concatenate((low & 0x3F, (rest & 0x0F) | ((low >> 2) & 0x30)), axis=-1)  # [N, S, 8]
    m = np.concatenate((high & 0x3F, (rest >> 4) | ((high >> 2) & 0x30)), axis=-1)
    # Each 32 bytes of nibbles hold two sub-blocks: the low nibbles, then the high ones.
    qs = blocks[..., 16:].reshape(rows, supers, 4, 1, 32)
    values = (qs >> np.array([0, 4], dtype=np.uint8).reshape(2, 1)) & 0x0F  # [N, S, 4, 2, 32]
    scale = (d * sc).reshape(rows, -1)
    return _four_bit(values.reshape(rows, -1), scale, -(dmin * m).reshape(rows, -1))


def _q6_k(blocks: np.ndarray) -> QuantizedTensor:
    # blocks: [N, S, 210] super-blocks
    rows, supers = blocks.shape[:2]
    ql = blocks[..., :128].reshape(rows, supers, 2, 1, 64)
    qh = blocks[..., 128:192].reshape(rows, supers, 2, 1, 32)
    scales = blocks[..., 192:208].copy().view(np.int8).astype(np.float32)  # [N, S, 16]
    d = blocks[..., 208:210].copy().view(np.float16).astype(np.float32)  # [N, S, 1]
    low = ((ql >> np.array([0, 4], dtype=np.uint8).reshape(2, 1)) & 0x0F).reshape(
        rows, supers, 2, 4, 32
    )
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)
    high = ((qh >> shifts) & 0x03).reshape(rows, supers, 2, 4, 32)
    values = ((low | (high << 4)).astype(np.int16) - 32).astype(np.int8).reshape(rows, -1)
    scale = (d * scales).reshape(rows, -1)
    return QuantizedTensor(torch.from_numpy(values), _tensor(scale), torch.empty(0))


def _fields(blocks: np.ndarray, size: int, start: int, stop: int) -> np.ndarray:
    # bytes [start, stop) of every `size`-byte block: [N, blocks, stop - start]
    return blocks.reshape(blocks.shape[0], -1, size)[..., start:stop]


def _f16(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    # little-endian f16 from its two byte columns -> float32
    bits = low.astype(np.uint16) | (high.astype(np.uint16) << 8)
    return bits.view(np.float16).astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    # [N, blocks, 16] bytes, element j low and j + 16 high -> [N, K] values 0..15
    values = np.concatenate((packed & 0x0F, packed >> 4), axis=-1)
    return values.reshape(packed.shape[0], -1)


def _four_bit(values: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> QuantizedTensor:
    # values [N, K] in 0..15 -> the kernel's packing: element j low, j + 16 high, per block
    blocks = values.astype(np.uint8).reshape(values.shape[0], -1, BLOCK)
    packed = blocks[..., : BLOCK // 2] | (blocks[..., BLOCK // 2 :] << 4)
    return QuantizedTensor(
        torch.from_numpy(packed.reshape(values.shape[0], -1).copy()),
        _tensor(scale),
        _tensor(minimum),
    )


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
