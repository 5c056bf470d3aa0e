"""Build a LlamaForCausalLM from a local checkpoint: a Hugging Face directory or a .gguf file.

The model is built on the meta device and every parameter is then filled straight from
the checkpoint, converted to the wanted dtype and device one tensor at a time, so memory
never holds more than the model plus one tensor in flight. Checkpoints name q/k/v and
gate/up projections apart; each fills its rows of the model's fused qkv_proj or gate_up_proj.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import torch
from safetensors import safe_open
from torch import Tensor, nn

from headrace.config import Quantization
from headrace.model.gguf_file import gguf_config, gguf_weights
from headrace.model.gguf_quants import SERVED_AS_STORED, SIXTEEN_BIT
from headrace.model.gguf_reader import read_gguf
from headrace.model.llama import (
    LlamaConfig,
    LlamaForCausalLM,
    PackedLinear,
    RopeScaling,
    replace_linears,
    rope_table,
)
from headrace.model.placement import cpu_has_native_bfloat16
from headrace.model.progress import every_while
from headrace.model.quantized import BLOCK, QuantizedLinear, QuantizedTensor, quantize_q8_0

__all__ = ["load_model", "read_config"]

logger = logging.getLogger("headrace.model")

# Architectures (config.json "architectures" / "model_type") the Llama code serves.
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}


def read_config(path: Path) -> LlamaConfig:
    """The model shape of a Hugging Face directory (its config.json) or of a .gguf file."""
    if _is_gguf(path):
        return gguf_config(read_gguf(path))
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} has no config.json")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file} does not hold a JSON object")
    try:
        return _config_from_hf(raw)
    except KeyError as exc:
        raise ValueError(f"{config_file} lacks {exc.args[0]!r}") from exc


def load_model(
    path: Path,
    dtype: torch.dtype,
    device: torch.device,
    *,
    quantization: Quantization = "auto",
) -> LlamaForCausalLM:
    """Every weight of the checkpoint at `path`, on `device`, ready for inference.

    Activations and unquantized weights are in `dtype`. On the CPU, a GGUF file's quantized
    matrices stay as stored unless `quantization` is "none" (then they are dequantized to
    `dtype`), and with "int8" every other projection is quantized to int8 blocks (Q8_0). With
    "auto" and float32 activations, 16-bit matrices (float16, bfloat16) stay 16-bit too.
    """
    if quantization == "int8" and device.type != "cpu":
        raise ValueError("int8 weights are supported on the CPU only")
    weights: Iterator[tuple[str, Tensor | QuantizedTensor]]
    if _is_gguf(path):
        contents = read_gguf(path)
        config = gguf_config(contents)
        weights = gguf_weights(contents, config, kept=_kept_gguf_types(quantization, dtype, device))
    else:
        config = read_config(path)
        weights = _safetensors_weights(path)
        if _keeps_sixteen_bit(quantization, dtype, device):
            weights = ((name, _sixteen_bit(tensor)) for name, tensor in weights)
    logger.info("loading %s (%d layers) as %s on %s", path, config.num_hidden_layers, dtype, device)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    _assign_weights(model, weights, dtype, device)
    if quantization == "int8":
        replace_linears(model, _int8_linear)
    elif device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_native_bfloat16():
        replace_linears(model, PackedLinear)
    quantized = sum(isinstance(module, QuantizedLinear) for module in model.modules())
    if quantized:
        logger.info("%d linear layers run on their weights as stored", quantized)
    # Computed in float32, applied in the model's dtype, as transformers does.
    model.model.rope = rope_table(config).to(device=device, dtype=dtype)
    return model.eval()


def _keeps_sixteen_bit(
    quantization: Quantization, dtype: torch.dtype, device: torch.device
) -> bool:
    # 16-bit matrices multiply float32 activations on the kernels at half float32's bytes; under
    # bfloat16 activations oneDNN multiplies them faster once converted, and "int8" requantizes.
    return quantization == "auto" and dtype == torch.float32 and device.type == "cpu"


def _kept_gguf_types(
    quantization: Quantization, dtype: torch.dtype, device: torch.device
) -> frozenset[gguf.GGMLQuantizationType]:
    # The GGUF types whose matrices stay as stored.
    if quantization == "none" or device.type != "cpu":
        return frozenset()
    if _keeps_sixteen_bit(quantization, dtype, device):
        return SERVED_AS_STORED | SIXTEEN_BIT.keys()
    return SERVED_AS_STORED


def _sixteen_bit(tensor: Tensor) -> Tensor | QuantizedTensor:
    # A 16-bit matrix of whole blocks, kept as it is; any other tensor unchanged.
    if tensor.dim() == 2 and tensor.dtype in SIXTEEN_BIT.values() and tensor.shape[1] % BLOCK == 0:
        return QuantizedTensor.half(tensor)
    return tensor


def _is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".gguf"


def _config_from_hf(raw: dict[str, Any]) -> LlamaConfig:
    family = _family(raw)
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported hidden_act {raw['hidden_act']!r}; only silu is supported")
    if raw.get("mlp_bias", False):
        raise ValueError("MLP biases (mlp_bias: true) are not supported")
    if family == "llama" and raw.get("attention_bias", False):
        raise ValueError("attention_bias on a Llama model (o_proj bias) is not supported")
    hidden_size = int(raw["hidden_size"])
    num_heads = int(raw["num_attention_heads"])
    rope = raw.get("rope_parameters") or {}
    rope_theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
    max_positions = int(raw.get("max_position_embeddings", 2048))
    window = _sliding_window(raw, family)
    if window is not None and window < max_positions:
        # Full attention equals sliding-window attention while the context fits the window.
        logger.info("sliding window of %d tokens: context capped at %d", window, window)
        max_positions = window
    return LlamaConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=hidden_size,
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=num_heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or num_heads),
        head_dim=int(raw.get("head_dim") or hidden_size // num_heads),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta),
        max_position_embeddings=max_positions,
        # Llama, Mistral and Qwen2 configs all default to untied heads.
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=family == "qwen2",
        rope_scaling=_rope_scaling(raw.get("rope_scaling") or rope),
    )


def _family(raw: dict[str, Any]) -> str:
    architectures = raw.get("architectures") or []
    supported = ", ".join(_ARCHITECTURES)
    if architectures:
        if architectures[0] not in _ARCHITECTURES:
            raise ValueError(
                f"unsupported architecture {architectures[0]!r}; supported: {supported}"
            )
        return _ARCHITECTURES[architectures[0]]
    model_type = raw.get("model_type")
    if model_type not in _ARCHITECTURES.values():
        raise ValueError(f"unsupported model_type {model_type!r}; supported: {supported}")
    return str(model_type)


def _sliding_window(raw: dict[str, Any], family: str) -> int | None:
    window = raw.get("sliding_window")
    if window is None or family == "llama":
        return None
    if family == "qwen2" and not raw.get("use_sliding_window", False):
        return None
    return int(window)


def _rope_scaling(rope: dict[str, Any]) -> RopeScaling | None:
    kind = rope.get("rope_type", rope.get("type"))
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise ValueError(f"unsupported rope scaling {kind!r}; only llama3 scaling is supported")
    return RopeScaling(
        factor=float(rope["factor"]),
        low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
    )


def _safetensors_weights(path: Path) -> Iterator[tuple[str, Tensor]]:
    for file in _safetensors_files(path):
        with safe_open(file, framework="pt", device="cpu") as shard:
            for name in shard.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield name, shard.get_tensor(name)


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = [path / name for name in sorted(set(weight_map.values()))]
        absent = [file.name for file in files if not file.is_file()]
        if absent:
            raise ValueError(f"{path} lacks shards named in its index: {', '.join(absent)}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"{path} has neither model.safetensors nor model.safetensors.index.json")


def _assign_weights(
    model: LlamaForCausalLM,
    weights: Iterator[tuple[str, Tensor | QuantizedTensor]],
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    tied = model.config.tie_word_embeddings
    params = dict(model.named_parameters())  # a tied head appears once, as the embedding
    layout = _checkpoint_layout(model)
    filled: dict[str, Tensor] = {}
    # Quantized parts of linear weights: parameter -> (first row, part)
    parts: dict[str, list[tuple[int, QuantizedTensor]]] = {}
    loaded: set[str] = set()
    unexpected: list[str] = []

    def say(seconds: float) -> None:
        logger.info("loading weights: %d of %d, %.0f s so far", len(loaded), len(layout), seconds)

    with every_while(say):
        for name, tensor in weights:
            if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
                continue
            if name not in layout:
                unexpected.append(name)
                continue
            param_name, rows = layout[name]
            param = params[param_name]
            expected = (rows.stop - rows.start, *param.shape[1:])
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)} in the checkpoint, "
                    f"the model expects {expected}"
                )
            loaded.add(name)
            if isinstance(tensor, QuantizedTensor):
                parts.setdefault(param_name, []).append((rows.start, tensor))
                if param_name != "model.embed_tokens.weight":
                    continue
                tensor = tensor.dequantize()  # the embedding is looked up, not multiplied
            if param_name not in filled:
                filled[param_name] = torch.empty(param.shape, dtype=dtype, device=device)
            filled[param_name][rows] = tensor  # converted to dtype and device as it is copied
    missing = sorted(set(layout) - loaded)
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the model: "
            f"missing {_listing(missing)}; unexpected {_listing(sorted(unexpected))}"
        )
    head = parts.pop("model.embed_tokens.weight", None)
    if tied and head is not None:
        parts["lm_head.weight"] = head  # the tied head multiplies by the quantized embedding
    for param_name, pieces in list(parts.items()):
        if param_name in filled:  # some rows came in float: the rest are dequantized to join them
            for start, piece in pieces:
                filled[param_name][start : start + piece.values.shape[0]] = piece.dequantize()
            del parts[param_name]
    for param_name, value in filled.items():
        module_name, _, leaf = param_name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, nn.Parameter(value, requires_grad=False))
    if tied and "lm_head.weight" not in parts:
        model.lm_head.weight = model.model.embed_tokens.weight
    for param_name, pieces in parts.items():
        module_name = param_name.rpartition(".")[0]
        linear = model.get_submodule(module_name)
        assert isinstance(linear, nn.Linear)
        in_order = [piece for _, piece in sorted(pieces, key=lambda start_piece: start_piece[0])]
        parent, _, leaf = module_name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, QuantizedLinear(in_order, linear.bias))


def _int8_linear(linear: nn.Linear) -> QuantizedLinear:
    return QuantizedLinear([quantize_q8_0(linear.weight)], linear.bias)


def _checkpoint_layout(model: LlamaForCausalLM) -> dict[str, tuple[str, slice]]:
    # checkpoint tensor name -> the parameter it goes into, and the rows it fills there
    fused = _fused_projections(model.config)
    layout: dict[str, tuple[str, slice]] = {}
    for name, param in model.named_parameters():
        module, _, leaf = name.rpartition(".")
        parent, dot, child = module.rpartition(".")
        start = 0
        for part, rows in fused.get(child, ((child, param.shape[0]),)):
            layout[f"{parent}{dot}{part}.{leaf}"] = (name, slice(start, start + rows))
            start += rows
    return layout


def _fused_projections(config: LlamaConfig) -> dict[str, tuple[tuple[str, int], ...]]:
    # fused projection -> the checkpoint projections it stacks, in order, with their rows
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    mlp_rows = config.intermediate_size
    return {
        "qkv_proj": (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)),
        "gate_up_proj": (("gate_proj", mlp_rows), ("up_proj", mlp_rows)),
    }


def _listing(names: list[str], limit: int = 8) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
