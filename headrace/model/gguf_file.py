"""A llama.cpp GGUF file read as a LlamaConfig and Hugging Face-named tensors.

Matrices of the types the caller keeps as stored (quantized ones from SERVED_AS_STORED, 16-bit
ones from SIXTEEN_BIT) come as QuantizedTensors, repacked value for value; every other tensor
is dequantized to float32 as it is yielded. llama.cpp's converter reorders the rows of every
Llama q/k projection so that each head's rotary pairs sit side by side; the reverse reordering
here gives back the Hugging Face rotate-half layout (of quantized rows too).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import replace

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from torch import Tensor

from headrace.model.gguf_quants import repack
from headrace.model.gguf_reader import GGUFContents, GGUFTensor
from headrace.model.llama import LlamaConfig, RopeScaling, rope_inverse_frequencies
from headrace.model.quantized import BLOCK, QuantizedTensor

__all__ = ["gguf_config", "gguf_weights", "unpermute_rotary"]

# GGUF architectures served, and whether llama.cpp permuted their q/k rows.
_PERMUTED = {"llama": True, "qwen2": False}

# GGUF tensor names of the top level, and their Hugging Face names.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# GGUF per-block tensor names, and their Hugging Face names within model.layers.N.
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# Llama 3.1 scaling as Meta ships it; GGUF keeps only its per-frequency factors.
_LLAMA3_SCALING = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 8192}


def gguf_config(contents: GGUFContents) -> LlamaConfig:
    """The model shape recorded in a GGUF file's metadata."""
    arch = str(contents.field("general.architecture"))
    if arch not in _PERMUTED:
        raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: llama, qwen2")
    tensors = {tensor.name: tensor for tensor in contents.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError("GGUF file has no token_embd.weight tensor")
    scaling_type = contents.field(f"{arch}.rope.scaling.type", "none")
    if scaling_type != "none":
        raise ValueError(f"unsupported GGUF rope scaling {scaling_type!r}")
    hidden_size = int(contents.field(f"{arch}.embedding_length"))
    num_heads = int(contents.field(f"{arch}.attention.head_count"))
    head_dim = int(contents.field(f"{arch}.attention.key_length", hidden_size // num_heads))
    rotary_dim = int(contents.field(f"{arch}.rope.dimension_count", head_dim))
    if rotary_dim != head_dim:
        raise ValueError(f"partial rotary embeddings ({rotary_dim} of {head_dim}) unsupported")
    embedding_rows = int(tensors["token_embd.weight"].shape[-1])  # ne order: [C, V]
    config = LlamaConfig(
        vocab_size=int(contents.field(f"{arch}.vocab_size", embedding_rows)),
        hidden_size=hidden_size,
        intermediate_size=int(contents.field(f"{arch}.feed_forward_length")),
        num_hidden_layers=int(contents.field(f"{arch}.block_count")),
        num_attention_heads=num_heads,
        num_key_value_heads=int(contents.field(f"{arch}.attention.head_count_kv", num_heads)),
        head_dim=head_dim,
        rms_norm_eps=float(contents.field(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=float(contents.field(f"{arch}.rope.freq_base", 10000.0)),
        max_position_embeddings=int(contents.field(f"{arch}.context_length")),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias=arch == "qwen2",
    )
    rope_freqs = tensors.get("rope_freqs.weight")
    if rope_freqs is None:
        return config
    return _with_llama3_scaling(config, _tensor(rope_freqs))


def gguf_weights(
    contents: GGUFContents, config: LlamaConfig, *, kept: Collection[GGMLQuantizationType] = ()
) -> Iterator[tuple[str, Tensor | QuantizedTensor]]:
    """Every weight of the file under its Hugging Face name, on the CPU: as float32, or as a
    QuantizedTensor where it is a matrix of a type in `kept` (and of whole blocks of 32)."""
    permuted = _PERMUTED[str(contents.field("general.architecture"))]
    for tensor in contents.tensors:
        if tensor.name == "rope_freqs.weight":
            continue  # folded into LlamaConfig.rope_scaling by gguf_config
        name = _hf_name(tensor.name)
        value: Tensor | QuantizedTensor
        # GGUF shapes run innermost first: (columns, rows).
        if len(tensor.shape) == 2 and tensor.tensor_type in kept and tensor.shape[0] % BLOCK == 0:
            value = repack(tensor.data, tensor.tensor_type, int(tensor.shape[1]))
        else:
            value = _tensor(tensor)
        if permuted and name.endswith(("q_proj.weight", "q_proj.bias")):
            value = _unpermuted(value, config.num_attention_heads)
        elif permuted and name.endswith(("k_proj.weight", "k_proj.bias")):
            value = _unpermuted(value, config.num_key_value_heads)
        yield name, value


def _unpermuted(value: Tensor | QuantizedTensor, num_heads: int) -> Tensor | QuantizedTensor:
    if isinstance(value, QuantizedTensor):
        return value.map_rows(lambda rows: unpermute_rotary(rows, num_heads))
    return unpermute_rotary(value, num_heads)


def unpermute_rotary(weight: Tensor, num_heads: int) -> Tensor:
    # weight: [H * D, ...] with each head's rows interleaved (llama.cpp) -> halves (HF)
    head_dim = weight.shape[0] // num_heads
    heads = weight.reshape(num_heads, head_dim // 2, 2, *weight.shape[1:])
    return heads.transpose(1, 2).reshape(weight.shape)


def _hf_name(name: str) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = _BLOCK_TENSOR.fullmatch(name)
    if match is None or match.group(2) not in _BLOCK_NAMES:
        return name  # left as it is, to be reported as unexpected
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"


def _tensor(tensor: GGUFTensor) -> Tensor:
    # -> the tensor in torch order (GGUF's ne order reversed), float32
    array = dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(reversed(tensor.shape))
    array = np.require(array, dtype=np.float32, requirements=["C", "W"]).reshape(shape)
    return torch.from_numpy(array)


def _with_llama3_scaling(config: LlamaConfig, factors: Tensor) -> LlamaConfig:
    # factors: [D/2], llama.cpp divides each rotary frequency by its factor
    scaling = RopeScaling(
        factor=float(factors.max()),
        low_freq_factor=_LLAMA3_SCALING["low_freq_factor"],
        high_freq_factor=_LLAMA3_SCALING["high_freq_factor"],
        original_max_position_embeddings=int(_LLAMA3_SCALING["original"]),
    )
    scaled = replace(config, rope_scaling=scaling)
    plain = rope_inverse_frequencies(config)
    if factors.shape != plain.shape or not torch.allclose(
        plain / factors, rope_inverse_frequencies(scaled), rtol=1e-4
    ):
        raise ValueError("GGUF rope_freqs do not match Llama 3.1 rope scaling; unsupported")
    return scaled
