"""The model's building blocks against their plain definitions: rotary embedding, linears."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from transformers.models.llama import modeling_llama

from headrace.model.llama import (
    LlamaConfig,
    PackedLinear,
    apply_rope,
    rope_table,
)
from headrace.model.placement import cpu_has_native_bfloat16

needs_native_bfloat16 = pytest.mark.skipif(
    not cpu_has_native_bfloat16(), reason="this CPU does not compute in bfloat16 natively"
)


def test_apply_rope_matches_transformers() -> None:
    heads, kv_heads, head_dim, positions = 4, 2, 16, torch.tensor([0, 5, 31])
    config = LlamaConfig(
        vocab_size=8,
        hidden_size=heads * head_dim,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    hf_config = transformers.LlamaConfig(
        hidden_size=heads * head_dim, num_attention_heads=heads, max_position_embeddings=32
    )
    q = torch.randn(len(positions), heads, head_dim)  # [T, H, D]
    k = torch.randn(len(positions), kv_heads, head_dim)
    rotary = modeling_llama.LlamaRotaryEmbedding(hf_config)
    cos, sin = rotary(q, positions.unsqueeze(0))  # [1, T, D] each
    expected_q, expected_k = modeling_llama.apply_rotary_pos_emb(
        q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0), cos, sin
    )  # [1, H, T, D]
    rope = rope_table(config)[positions]
    assert torch.allclose(apply_rope(q, rope), expected_q[0].transpose(0, 1), atol=1e-6)
    assert torch.allclose(apply_rope(k, rope), expected_k[0].transpose(0, 1), atol=1e-6)


def make_linear(dtype: torch.dtype, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=bias).to(dtype).requires_grad_(False)
    linear.weight[0] = 0  # a row of zeros must not divide by a zero scale
    return linear


@needs_native_bfloat16
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 32])
def test_packed_linear_equals_nn_linear(bias: bool, rows: int) -> None:
    plain = make_linear(torch.bfloat16, bias)
    x = torch.randn(rows, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(PackedLinear(plain)(x), plain(x))
