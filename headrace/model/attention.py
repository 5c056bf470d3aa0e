"""Attention over a flat batch of tokens from many sequences, each with its own cache slot.

A step's tokens are laid out decodes first (one token per sequence), then each prefill
chunk in turn. Every sequence owns one slot of the KV cache, holding its keys and values
at their positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AttentionBatch", "PrefillSpan", "attend", "write_kv"]


@dataclass(frozen=True)
class PrefillSpan:
    # Cache slot of the sequence.
    slot: int
    # Index of the chunk's first token in the flat batch.
    token_offset: int
    # Tokens of the sequence already in the cache before this chunk.
    cached_len: int
    # Tokens in this chunk.
    length: int


@dataclass(frozen=True)
class AttentionBatch:
    # [T] cache slot of every token in the flat batch.
    token_slots: Tensor
    # [T] position of every token within its sequence.
    positions: Tensor
    # [D] cache slots of the decoding sequences, whose tokens open the batch.
    decode_slots: Tensor
    # [D, 1, 1, L] True where a decoding sequence may attend (positions it has filled).
    decode_mask: Tensor
    # L: the longest context among the decoding sequences, this step's token included.
    decode_max_len: int
    # The prefill chunks, in batch order after the decodes.
    prefills: tuple[PrefillSpan, ...]

    @property
    def num_decodes(self) -> int:
        return int(self.decode_slots.shape[0])


def write_kv(k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, batch: AttentionBatch) -> None:
    # k_cache, v_cache: [S, Hkv, L, D]; k, v: [T, Hkv, D]
    k_cache[batch.token_slots, :, batch.positions] = k
    v_cache[batch.token_slots, :, batch.positions] = v


def attend(q: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch) -> Tensor:
    # q: [T, H, D]; k_cache, v_cache: [S, Hkv, L, D] -> [T, H, D]
    out = torch.empty_like(q)
    n = batch.num_decodes
    if n:
        length = batch.decode_max_len
        k = k_cache[batch.decode_slots, :, :length]  # [n, Hkv, length, D]
        v = v_cache[batch.decode_slots, :, :length]
        o = F.scaled_dot_product_attention(
            q[:n].unsqueeze(2), k, v, attn_mask=batch.decode_mask, enable_gqa=True
        )  # [n, H, 1, D]
        out[:n] = o.squeeze(2)
    for span in batch.prefills:
        end = span.cached_len + span.length
        rows = slice(span.token_offset, span.token_offset + span.length)
        # 4-D [1, H, l, D] operands: the CPU's flash kernel takes them, 3-D ones fall back to
        # the math path (10x slower at 2k tokens).
        qp = q[rows].transpose(0, 1).unsqueeze(0)  # [1, H, l, D]
        k = k_cache[span.slot, :, :end].unsqueeze(0)  # [1, Hkv, end, D]
        v = v_cache[span.slot, :, :end].unsqueeze(0)
        if span.cached_len == 0:
            o = F.scaled_dot_product_attention(qp, k, v, is_causal=True, enable_gqa=True)
        else:
            # Query i sits at position cached_len + i and sees every key up to it.
            positions = torch.arange(span.length, device=q.device).unsqueeze(1) + span.cached_len
            mask = torch.arange(end, device=q.device).unsqueeze(0) <= positions  # [l, end]
            o = F.scaled_dot_product_attention(qp, k, v, attn_mask=mask, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1)
    return out
