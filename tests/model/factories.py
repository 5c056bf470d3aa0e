"""Tiny transformers reference models, GGUF files made from them, and one-sequence batches."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
import transformers
from torch import Tensor

from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.llama import LlamaConfig, LlamaForCausalLM
from headrace.model.quantized import QuantizedLinear

# Small enough to be instant, big enough for grouped-query attention and several heads.
TINY: dict[str, Any] = dict(
    vocab_size=160,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)

LLAMA3_SCALING: dict[str, Any] = dict(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)


def make_hf_model(kind: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A random float32 transformers model: llama, llama3 (rope scaling), mistral or qwen2."""
    fields = {**TINY, **overrides}
    if kind == "llama3" and "max_position_embeddings" not in overrides:
        fields["max_position_embeddings"] = 16384  # past the original 8192
    if kind == "llama":
        config: Any = transformers.LlamaConfig(**fields)
    elif kind == "llama3":
        rope = {**LLAMA3_SCALING, "rope_theta": 500000.0}
        config = transformers.LlamaConfig(rope_parameters=rope, **fields)
    elif kind == "mistral":
        config = transformers.MistralConfig(**fields)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(**fields)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        for param in model.parameters():  # larger than the default init, so errors show
            param.normal_(std=0.3)
    return model.eval()


def save_hf(model: Any, path: Path, **kwargs: Any) -> Path:
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return path


@torch.no_grad()
def hf_logits(model: Any, ids: Tensor) -> Tensor:
    # ids: [T] -> [T, V]
    return model(ids.unsqueeze(0)).logits[0].float()  # type: ignore[no-any-return]


def checkpoint_state(model: LlamaForCausalLM) -> dict[str, Tensor]:
    """The model's weights under Hugging Face names: its fused projections split apart again."""
    c = model.config
    q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    splits = {
        "qkv_proj": (("q_proj", "k_proj", "v_proj"), (q_rows, kv_rows, kv_rows)),
        "gate_up_proj": (("gate_proj", "up_proj"), (c.intermediate_size, c.intermediate_size)),
    }
    weights = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            weights[f"{name}.weight"] = module.dequantize(torch.float32)
    state = {}
    for name, tensor in weights.items():
        fused = next((f for f in splits if f".{f}." in name), None)
        if fused is None:
            state[name] = tensor
            continue
        parts, rows = splits[fused]
        for part, piece in zip(parts, tensor.split(rows), strict=True):
            state[name.replace(fused, part)] = piece
    return state


def llama_cpp_permute(weight: Tensor, num_heads: int) -> Tensor:
    # What llama.cpp's convert_hf_to_gguf.py does to Llama q/k rows.
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_rope_factors(theta: float, head_dim: int) -> np.ndarray[Any, Any]:
    # What llama.cpp's converter stores as rope_freqs.weight for Llama 3.1 scaling.
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    s = LLAMA3_SCALING
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"]
            )
            factors.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str:
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, _, kind = rest.rpartition(".")
    return f"blk.{layer}.{_GGUF_NAMES[module]}.{kind}"


def write_gguf(
    model: Any,
    path: Path,
    arch: str = "llama",
    quantize: gguf.GGMLQuantizationType
    | Callable[[str], gguf.GGMLQuantizationType | None]
    | None = None,
    rope_freqs: np.ndarray[Any, Any] | None = None,
) -> Path:
    """The model as llama.cpp's converter would write it (float32, or 2-D weights quantized)."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(c.vocab_size)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs)
    tied = c.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        if arch == "llama" and ".q_proj." in name:
            tensor = llama_cpp_permute(tensor, c.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            tensor = llama_cpp_permute(tensor, c.num_key_value_heads)
        array = tensor.float().numpy()
        kind = quantize(name) if callable(quantize) else quantize
        if kind is not None and array.ndim == 2:
            packed = gguf.quants.quantize(array, kind)
            writer.add_tensor(gguf_name(name), packed, raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name(name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Positions per cache block in model tests: small, so sequences span several blocks.
BLOCK_SIZE = 4


def new_kv_cache(
    config: LlamaConfig, max_len: int = 64, slots: int = 1
) -> list[tuple[Tensor, Tensor]]:
    """A paged cache with room for `slots` sequences of `max_len` tokens, plus the null block."""
    num_blocks = 1 + slots * -(-max_len // BLOCK_SIZE)
    shape = (num_blocks, BLOCK_SIZE, config.num_key_value_heads, config.head_dim)
    return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(config.num_hidden_layers)]


def block_table(length: int, slot: int = 0, slots: int = 1) -> Tensor:
    """The blocks of sequence `slot` of `slots`: 1 + slot, 1 + slot + slots, ... (interleaved)."""
    return torch.arange(-(-length // BLOCK_SIZE)) * slots + 1 + slot


def slot_mapping(positions: Tensor, slot: int = 0, slots: int = 1) -> Tensor:
    table = block_table(int(positions.max()) + 1, slot, slots)
    return table[positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE


def prefill_batch(
    length: int, cached_len: int = 0, slot: int = 0, slots: int = 1
) -> AttentionBatch:
    positions = torch.arange(cached_len, cached_len + length)
    table = block_table(cached_len + length, slot, slots)
    return AttentionBatch(
        slot_mapping=slot_mapping(positions, slot, slots),
        positions=positions,
        decode_block_tables=torch.empty(0, 0, dtype=torch.long),
        decode_lens=torch.empty(0, dtype=torch.long),
        prefills=(PrefillSpan(table, token_offset=0, cached_len=cached_len, length=length),),
    )


def decode_batch(position: int, slot: int = 0, slots: int = 1) -> AttentionBatch:
    table = block_table(position + 1, slot, slots)
    return AttentionBatch(
        slot_mapping=slot_mapping(torch.tensor([position]), slot, slots),
        positions=torch.tensor([position]),
        decode_block_tables=table.unsqueeze(0),
        decode_lens=torch.tensor([position + 1]),
        prefills=(),
    )


@torch.no_grad()
def run(
    model: LlamaForCausalLM, ids: Tensor, batch: AttentionBatch, kv: list[tuple[Tensor, Tensor]]
) -> Tensor:
    # ids: [T] -> logits [T, V]
    return model.compute_logits(model(ids, batch, kv))
