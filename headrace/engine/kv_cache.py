"""The paged KV cache's memory: per layer, keys and values in fixed-size blocks of positions."""

from __future__ import annotations

import math
import mmap

import torch
from torch import Tensor

from headrace.model.llama import LlamaConfig

__all__ = ["DEFAULT_KV_CACHE_MEMORY", "KVCache", "bytes_per_token", "num_blocks_for"]

# Cache memory when none is asked for: room for every sequence's whole context, up to this.
DEFAULT_KV_CACHE_MEMORY = 2 * 2**30


def bytes_per_token(config: LlamaConfig, dtype: torch.dtype) -> int:
    """Cache memory one token takes: keys and values in every layer."""
    per_layer = 2 * config.num_key_value_heads * config.head_dim * dtype.itemsize
    return config.num_hidden_layers * per_layer


def num_blocks_for(
    memory: int | None,
    *,
    block_size: int,
    bytes_per_token: int,
    max_num_seqs: int,
    max_model_len: int,
) -> int:
    """Blocks the cache gets, the null block included; ValueError if one context won't fit."""
    if memory is None:
        memory = min(DEFAULT_KV_CACHE_MEMORY, max_num_seqs * max_model_len * bytes_per_token)
    num_blocks = memory // (block_size * bytes_per_token)
    needed = -(-max_model_len // block_size) + 1
    if num_blocks < needed:
        raise ValueError(
            f"a KV cache of {memory / 2**20:.1f} MiB holds {num_blocks} blocks of {block_size}"
            f" tokens; one sequence of max_model_len {max_model_len} needs {needed}:"
            " give --kv-cache-memory more or lower --max-model-len"
        )
    return int(num_blocks)


class KVCache:
    def __init__(
        self,
        config: LlamaConfig,
        *,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
        self.layers: list[tuple[Tensor, Tensor]] = [
            (_zeros(shape, dtype, device), _zeros(shape, dtype, device))
            for _ in range(config.num_hidden_layers)
        ]
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.bytes = num_blocks * block_size * bytes_per_token(config, dtype)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Zeros, so that positions never written (the null block's, a block's tail) read as
    finite. On the CPU, an anonymous memory map: it reads as zeros and takes memory as blocks
    are first written, where torch.zeros would write every byte before the server starts
    (1.5 s for 2 GiB on 2 cores)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    size = math.prod(shape) * dtype.itemsize
    memory = mmap.mmap(-1, max(size, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)  # fewer page faults and TLB misses
    return torch.frombuffer(memory, dtype=dtype, count=math.prod(shape)).view(shape)
