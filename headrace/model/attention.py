"""Attention over a flat batch of tokens from many sequences, over a paged KV cache.

A step's tokens are laid out decodes first (one token per sequence), then each prefill
chunk in turn, then any rows that pad the step to a bucketed size. The cache holds, per layer,
keys and values in blocks of positions, [num_blocks, block_size, Hkv, D]; a sequence's block
table lists the blocks its positions fall in, in order. Block 0 is the null block, which pads
block tables.

Decoding is one operator, `headrace::decode_attention`, which writes the step's keys and values
and attends: compiled code (see headrace.model.compiled) calls it as an opaque kernel that
mutates the cache in place, as it must, rather than tracing a copy of the whole cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headrace.model.kernel_caches import bucketed
from headrace.model.operators import define_operator

__all__ = ["AttentionBatch", "PrefillSpan", "attend"]


@dataclass(frozen=True)
class PrefillSpan:
    # [B] the sequence's block table, as far as this chunk reaches.
    block_table: Tensor
    # Index of the chunk's first token in the flat batch.
    token_offset: int
    # Tokens of the sequence already in the cache before this chunk.
    cached_len: int
    # Tokens in this chunk.
    length: int


@dataclass(frozen=True)
class AttentionBatch:
    # [T] where every token of the flat batch goes in the cache: block * block_size + offset.
    slot_mapping: Tensor
    # [T + P] position of every token within its sequence, then 0 for P rows of padding that
    # round the batch up to a bucketed size; the model computes them, attention skips them.
    positions: Tensor
    # [D, B] block tables of the decoding sequences, whose tokens open the batch; padded with 0.
    decode_block_tables: Tensor
    # [D] positions each decoding sequence has filled, its new token's included.
    decode_lens: Tensor
    # The prefill chunks, in batch order after the decodes.
    prefills: tuple[PrefillSpan, ...]

    @property
    def num_decodes(self) -> int:
        return int(self.decode_block_tables.shape[0])


def write_kv(k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, slots: Tensor) -> None:
    # k_cache, v_cache: [N, S, Hkv, D]; k, v: [T, Hkv, D]; slots: [T]
    k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)


def gather(cache: Tensor, block_tables: Tensor) -> Tensor:
    """The cached keys or values of sequences, position by position, as attention takes them."""
    # cache: [N, S, Hkv, D]; block_tables: [n, B] -> [n, Hkv, B * S, D]
    num_blocks, _size, heads, dim = cache.shape
    n = block_tables.shape[0]
    # index_select on rows of whole blocks copies 2.5x faster than indexing the 4-D cache.
    blocks = cache.view(num_blocks, -1).index_select(0, block_tables.view(-1))
    return blocks.view(n, -1, heads, dim).transpose(1, 2)


def _decode_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    slots: Tensor,
    block_tables: Tensor,
    lens: Tensor,
) -> Tensor:
    # q: [n, H, D]; k, v: [n, Hkv, D], one token per sequence -> [n, H, D]
    # Where operators.cpp cannot run (another device, no compiler). On the CPU its C++ kernel
    # (paged_attention.cpp) reads the cache in place, where this first copies the sequences'
    # blocks out for SDPA: whole decode steps of SmolLM2-135M on 2 cores ran 3-19% faster on it
    # at 8-32 sequences of 256-1024 positions, float32 held to AVX2 and bfloat16 with AMX alike
    # (but 32 sequences of 1024 in bfloat16, 5% slower).
    write_kv(k_cache, v_cache, k, v, slots)
    return _attend_gathered(q, k_cache, v_cache, block_tables, lens)


def _attend_gathered(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, lens: Tensor
) -> Tensor:
    # Decode attention with torch's operators: the blocks gathered, then one SDPA call.
    n = q.shape[0]
    keys = gather(k_cache, block_tables)  # [n, Hkv, L, D]
    values = gather(v_cache, block_tables)
    mask = torch.arange(keys.shape[2], device=q.device) < lens.unsqueeze(1)  # [n, L]
    # The query heads sharing a kv head go in as that head's queries, so each cached key is
    # read once per kv head rather than once per query head (1.2-1.7x faster).
    grouped = q.view(n, keys.shape[1], -1, q.shape[2])  # [n, Hkv, H / Hkv, D]
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask.view(n, 1, 1, -1))
    return out.view(n, -1, q.shape[2])


def _decode_attention_shape(q: Tensor, *_: Tensor) -> Tensor:
    return torch.empty_like(q)


define_operator(
    "decode_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, "
    "Tensor slots, Tensor block_tables, Tensor lens) -> Tensor",
    _decode_attention,
    _decode_attention_shape,
    in_cpp=True,
)


def attend(
    q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, batch: AttentionBatch
) -> Tensor:
    """Write the batch's keys and values to the cache, then attend over it.

    q: [T, H, D]; k, v: [T, Hkv, D]; k_cache, v_cache: [N, S, Hkv, D] -> [T, H, D]
    """
    n = batch.num_decodes
    parts = []
    if n:
        parts.append(
            torch.ops.headrace.decode_attention(
                q[:n],
                k[:n],
                v[:n],
                k_cache,
                v_cache,
                batch.slot_mapping[:n],
                batch.decode_block_tables,
                batch.decode_lens,
            )
        )
    num_tokens = batch.slot_mapping.shape[0]
    if batch.prefills:
        write_kv(k_cache, v_cache, k[n:num_tokens], v[n:num_tokens], batch.slot_mapping[n:])
    for span in batch.prefills:
        rows = slice(span.token_offset, span.token_offset + span.length)
        # Queries padded to a bucketed length and keys taken in whole blocks: the CPU's flash
        # kernel compiles and keeps a kernel per length it meets (see kernel_caches). Padding
        # queries' rows are dropped; no real query sees a padding key.
        padded = F.pad(q[rows], (0, 0, 0, 0, 0, bucketed(span.length) - span.length))
        # 4-D [1, H, l, D] operands: the CPU's flash kernel takes them, 3-D ones fall back to
        # the math path (10x slower at 2k tokens).
        qp = padded.transpose(0, 1).unsqueeze(0)  # [1, H, l', D]
        table = span.block_table.unsqueeze(0)
        keys = gather(k_cache, table)  # [1, Hkv, L', D], L' = the blocks' positions
        values = gather(v_cache, table)
        if span.cached_len == 0:
            o = F.scaled_dot_product_attention(qp, keys, values, is_causal=True, enable_gqa=True)
        else:
            # Query i sits at position cached_len + i and sees every key up to it.
            positions = torch.arange(qp.shape[2], device=q.device).unsqueeze(1) + span.cached_len
            mask = torch.arange(keys.shape[2], device=q.device).unsqueeze(0) <= positions
            o = F.scaled_dot_product_attention(qp, keys, values, attn_mask=mask, enable_gqa=True)
        parts.append(o[0, :, : span.length].transpose(0, 1))
    if q.shape[0] > num_tokens:
        # Rows that round the step up to a bucketed size (see ModelRunner): no sequence's.
        parts.append(q.new_zeros(q.shape[0] - num_tokens, *q.shape[1:]))
    # Decodes, then each prefill chunk, then padding: the batch's own order.
    return parts[0] if len(parts) == 1 else torch.cat(parts)
