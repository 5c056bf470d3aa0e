"""The Llama family (Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5) as one decoder-only model.

Parameter names match Hugging Face checkpoint keys, so a state dict loads as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headrace.model.attention import AttentionBatch, attend, write_kv

__all__ = [
    "LlamaConfig",
    "LlamaForCausalLM",
    "RopeScaling",
    "rope_inverse_frequencies",
    "rope_tables",
]


@dataclass(frozen=True)
class RopeScaling:
    # Llama 3.1's frequency-dependent stretch of the rotary embedding.
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LlamaConfig:
    # Rows of the embedding and of the output head.
    vocab_size: int
    # Width of the residual stream.
    hidden_size: int
    # Width of the MLP's hidden layer.
    intermediate_size: int
    # Decoder layers.
    num_hidden_layers: int
    # Query heads.
    num_attention_heads: int
    # Key/value heads (fewer than query heads under grouped-query attention).
    num_key_value_heads: int
    # Width of one attention head.
    head_dim: int
    # Epsilon of every RMSNorm.
    rms_norm_eps: float
    # Base of the rotary embedding's frequencies.
    rope_theta: float
    # Context length the model was trained for.
    max_position_embeddings: int
    # Whether the output head shares the embedding's weight.
    tie_word_embeddings: bool
    # Whether q/k/v projections carry a bias (Qwen2).
    attention_bias: bool = False
    # Llama 3.1 rope scaling, if the model uses it.
    rope_scaling: RopeScaling | None = None

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for the rotary embedding")


def rope_inverse_frequencies(config: LlamaConfig) -> Tensor:
    # -> [D/2]
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq.float()
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    medium = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(medium, blended, scaled).float()


def rope_tables(config: LlamaConfig) -> tuple[Tensor, Tensor]:
    # -> cos, sin: [P, D] in float32
    angles = torch.outer(
        torch.arange(config.max_position_embeddings, dtype=torch.float32),
        rope_inverse_frequencies(config),
    )  # [P, D/2]
    angles = torch.cat((angles, angles), dim=-1)  # [P, D]
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # x: [T, C] -> [T, C]
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, batch: AttentionBatch, kv: tuple[Tensor, Tensor]
    ) -> Tensor:
        # x: [T, C]; cos, sin: [T, 1, D]; kv: two [S, Hkv, L, D] -> [T, C]
        tokens = x.shape[0]
        q = self.q_proj(x).view(tokens, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        write_kv(kv[0], kv[1], k, v, batch)
        out = attend(q, kv[0], kv[1], batch)  # [T, H, D]
        return self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # x: [T, C] -> [T, C]
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, batch: AttentionBatch, kv: tuple[Tensor, Tensor]
    ) -> Tensor:
        # x: [T, C] -> [T, C]
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, batch, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    rope_cos: Tensor  # [P, D]
    rope_sin: Tensor  # [P, D]

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        cos, sin = rope_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self, input_ids: Tensor, batch: AttentionBatch, kv_caches: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        # input_ids: [T] -> hidden states [T, C]
        x = self.embed_tokens(input_ids)
        cos = self.rope_cos[batch.positions].to(x.dtype).unsqueeze(1)  # [T, 1, D]
        sin = self.rope_sin[batch.positions].to(x.dtype).unsqueeze(1)
        for layer, kv in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, batch, kv)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: Tensor, batch: AttentionBatch, kv_caches: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        # input_ids: [T] -> hidden states [T, C]
        return self.model(input_ids, batch, kv_caches)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        # hidden: [N, C] -> [N, V] in float32
        return self.lm_head(hidden).float()
