"""The Llama family (Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5) as one decoder-only model.

Parameter names match Hugging Face checkpoint keys, except for two fused projections:
`qkv_proj` holds q_proj, k_proj and v_proj stacked along the output rows, and `gate_up_proj`
holds gate_proj then up_proj, so that each is one matmul. The loader does the stacking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headrace.model.attention import AttentionBatch, attend
from headrace.model.operators import define_operator

__all__ = [
    "LlamaConfig",
    "LlamaForCausalLM",
    "PackedLinear",
    "RopeScaling",
    "apply_rope",
    "replace_linears",
    "rope_inverse_frequencies",
    "rope_table",
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


def rope_table(config: LlamaConfig) -> Tensor:
    # -> [P, 2, 1, D] in float32: every position's cos, then its sin with the first half negated
    angles = torch.outer(
        torch.arange(config.max_position_embeddings, dtype=torch.float32),
        rope_inverse_frequencies(config),
    )  # [P, D/2]
    cos, sin = angles.cos(), angles.sin()
    table = torch.stack((torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)), dim=1)
    return table.unsqueeze(2)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    # x: [T, H, D]; rope: [T, 2, 1, D] rows of rope_table -> [T, H, D]
    # Hugging Face's rotate-half form, x * cos + cat(-x2, x1) * sin, with the sign folded into
    # the table: cat(x2, x1) is x rolled by half a head.
    cos, signed_sin = rope.unbind(1)
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class PackedLinear(nn.Module):
    """nn.Linear with its weight laid out once in oneDNN's blocked format for this CPU.

    For bfloat16 on CPUs with native bfloat16 this is faster than nn.Linear, whose oneDNN call
    reads the plain weight at about half the memory bandwidth for one row and whose AMX path
    is slower for many rows. The results are the same bit for bit.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.weight = nn.Parameter(packed, requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        # x: [T, K] -> [T, N]
        out: Tensor = torch.ops.headrace.packed_linear(x, self.weight, self.bias)
        return out


def _packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    out: Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return out


def _packed_linear_shape(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    # The packed weight keeps its logical [N, K] shape.
    return x.new_empty(x.shape[0], weight.shape[0])


# An operator, so that torch.compile calls oneDNN rather than tracing into its opaque weight.
define_operator(
    "packed_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    _packed_linear,
    _packed_linear_shape,
)


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    """Swap every nn.Linear of the model for make(linear); a tied head gets its own copy."""
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    while linears:  # popped one at a time, so each old weight is freed once it is replaced
        name, linear = linears.popitem()
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, make(linear))


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
        qkv_heads = self.num_heads + 2 * self.num_kv_heads
        self.qkv_proj = nn.Linear(
            config.hidden_size, qkv_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self, x: Tensor, rope: Tensor, batch: AttentionBatch, kv: tuple[Tensor, Tensor]
    ) -> Tensor:
        # x: [T, C]; rope: [T, 2, 1, D]; kv: two [S, Hkv, L, D] -> [T, C]
        tokens = x.shape[0]
        qk_heads = self.num_heads + self.num_kv_heads
        qkv = self.qkv_proj(x).view(tokens, -1, self.head_dim)  # [T, H + 2 Hkv, D]
        qk = apply_rope(qkv[:, :qk_heads], rope)  # [T, H + Hkv, D]
        q, k = torch.split(qk, [self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, qk_heads:]  # [T, Hkv, D]
        out = attend(q, k, v, kv[0], kv[1], batch)  # [T, H, D]
        return self.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # x: [T, C] -> [T, C]
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # [T, I] each
        return self.down_proj(nn.functional.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(
        self, x: Tensor, rope: Tensor, batch: AttentionBatch, kv: tuple[Tensor, Tensor]
    ) -> Tensor:
        # x: [T, C]; rope: [T, 2, 1, D] -> [T, C]
        x = x + self.self_attn(self.input_layernorm(x), rope, batch, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    rope: Tensor  # [P, 2, 1, D] in the model's dtype, as rope_table lays it out

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        # A weight of its own, left uninitialized (the checkpoint's replaces it): Embedding's
        # random init on the meta device runs a Python decomposition (as rope's would, below).
        weight = torch.empty(config.vocab_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=weight)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # On the CPU even while the loader builds the model on the meta device: there the first
        # Python decomposition imports dynamo, over a second of a server's start.
        with torch.device("cpu"):
            self.register_buffer("rope", rope_table(config), persistent=False)

    def forward(
        self, input_ids: Tensor, batch: AttentionBatch, kv_caches: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        # input_ids: [T] -> hidden states [T, C]
        x = self.embed_tokens(input_ids)
        rope = self.rope[batch.positions]  # [T, 2, 1, D]
        for layer, kv in zip(self.layers, kv_caches, strict=True):
            x = layer(x, rope, batch, kv)
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
