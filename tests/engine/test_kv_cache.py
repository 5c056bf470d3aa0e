"""The KV cache's memory: zeros, one tensor per layer's keys and values, sized as asked."""

from __future__ import annotations

import torch

from headrace.engine.kv_cache import KVCache, bytes_per_token
from tests.engine.factories import make_model_config

CPU = torch.device("cpu")


def test_the_cache_reads_as_zeros_and_each_tensor_is_its_own() -> None:
    config = make_model_config()
    cache = KVCache(config, num_blocks=5, block_size=4, dtype=torch.bfloat16, device=CPU)
    assert len(cache.layers) == config.num_hidden_layers
    tensors = [tensor for layer in cache.layers for tensor in layer]
    for tensor in tensors:
        assert tensor.shape == (5, 4, config.num_key_value_heads, config.head_dim)
        assert tensor.dtype == torch.bfloat16 and tensor.is_contiguous()
        assert not tensor.any()
    cache.layers[0][0][2, 1] = 1.5  # one layer's keys: no other tensor sees it
    assert cache.layers[0][0].sum() == 1.5 * config.num_key_value_heads * config.head_dim
    assert not any(tensor.any() for tensor in tensors[1:])
    assert cache.bytes == 5 * 4 * bytes_per_token(config, torch.bfloat16)


def test_a_cache_of_float32() -> None:
    config = make_model_config()
    cache = KVCache(config, num_blocks=2, block_size=4, dtype=torch.float32, device=CPU)
    keys, values = cache.layers[-1]
    values += 1
    assert keys.dtype == torch.float32 and not keys.any() and values.min() == 1
