"""Reading config.json and loading safetensors checkpoints, whole or sharded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from headrace.model import loader
from headrace.model.llama import LlamaForCausalLM, PackedLinear, RopeScaling
from headrace.model.loader import load_model, read_config
from headrace.model.placement import cpu_has_native_bfloat16
from headrace.model.quantized import (
    HALF_AVX2_DEQUANTIZE_ROWS,
    HALF_DEQUANTIZE_ROWS,
    QuantizedLinear,
)
from tests.model.factories import (
    checkpoint_state,
    make_hf_model,
    new_kv_cache,
    prefill_batch,
    run,
    save_hf,
)

CPU = torch.device("cpu")

# A config.json as transformers 4 wrote it: rope_theta and rope_scaling at the top level.
OLD_STYLE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "vocab_size": 160,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


def write_config(path: Path, **changes: Any) -> Path:
    raw = {key: value for key, value in {**OLD_STYLE, **changes}.items() if value is not None}
    (path / "config.json").write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hf(make_hf_model("llama"), tmp_path_factory.mktemp("llama"))


def test_config_of_a_transformers_5_checkpoint(llama_dir: Path) -> None:
    config = read_config(llama_dir)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (64, 2, 160)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert config.rope_theta == 10000.0  # from rope_parameters
    assert config.rope_scaling is None
    assert not config.attention_bias and not config.tie_word_embeddings


def test_config_with_top_level_rope_and_llama3_scaling(tmp_path: Path) -> None:
    config = read_config(write_config(tmp_path))
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 64)
    assert config.head_dim == 16  # hidden_size // num_attention_heads
    assert config.num_key_value_heads == 2


def test_config_defaults(tmp_path: Path) -> None:
    config = read_config(
        write_config(tmp_path, rope_theta=None, rope_scaling=None, num_key_value_heads=None)
    )
    assert config.rope_theta == 10000.0
    assert config.num_key_value_heads == 4
    assert config.tie_word_embeddings is False


def test_qwen2_has_qkv_bias(tmp_path: Path) -> None:
    config = read_config(
        write_config(tmp_path, architectures=["Qwen2ForCausalLM"], rope_scaling=None)
    )
    assert config.attention_bias


def test_model_type_stands_in_for_architectures(tmp_path: Path) -> None:
    config = read_config(write_config(tmp_path, architectures=None, model_type="mistral"))
    assert config.hidden_size == 64


def test_mistral_sliding_window_caps_the_context(tmp_path: Path) -> None:
    changes = {"architectures": ["MistralForCausalLM"], "sliding_window": 100}
    assert read_config(write_config(tmp_path, **changes)).max_position_embeddings == 100


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "unsupported architecture 'GPT2LMHeadModel'"),
        ({"architectures": None, "model_type": "gemma"}, "unsupported model_type 'gemma'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope scaling 'yarn'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "unsupported rope scaling 'linear'"),
        ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
        ({"vocab_size": None}, "lacks 'vocab_size'"),
    ],
)
def test_unsupported_configs_are_refused(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_config(write_config(tmp_path, **changes))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no config\.json"):
        read_config(tmp_path)


def test_loads_every_weight(llama_dir: Path) -> None:
    model = load_model(llama_dir, torch.float32, CPU)
    saved = load_file(llama_dir / "model.safetensors")
    state = checkpoint_state(model)
    assert set(state) == set(saved)
    assert all(torch.equal(state[name], saved[name]) for name in saved)
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    assert not model.training


def test_projections_are_stacked_into_fused_ones(llama_dir: Path) -> None:
    layer = load_model(llama_dir, torch.float32, CPU).model.layers[1]
    saved = load_file(llama_dir / "model.safetensors")
    prefix = "model.layers.1"
    qkv = [saved[f"{prefix}.self_attn.{p}_proj.weight"] for p in "qkv"]
    gate_up = [saved[f"{prefix}.mlp.{p}_proj.weight"] for p in ("gate", "up")]
    assert torch.equal(layer.self_attn.qkv_proj.weight, torch.cat(qkv))
    assert torch.equal(layer.mlp.gate_up_proj.weight, torch.cat(gate_up))


def test_wrong_shape_of_a_fused_part_is_named(llama_dir: Path, tmp_path: Path) -> None:
    def edit(weights: dict[str, torch.Tensor]) -> None:
        weights["model.layers.0.self_attn.k_proj.weight"] = torch.ones(16, 64)

    message = r"k_proj.weight has shape \(16, 64\) .* expects \(32, 64\)"
    with pytest.raises(ValueError, match=message):
        load_model(_edit_checkpoint(llama_dir, tmp_path, edit), torch.float32, CPU)


def test_sharded_checkpoint_loads_like_a_single_file(llama_dir: Path, tmp_path: Path) -> None:
    reference = make_hf_model("llama")
    save_hf(reference, tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = checkpoint_state(load_model(tmp_path, torch.float32, CPU))
    single = checkpoint_state(load_model(llama_dir, torch.float32, CPU))
    assert all(torch.equal(sharded[name], single[name]) for name in single)


def test_tied_head_shares_the_embedding(tmp_path: Path) -> None:
    save_hf(make_hf_model("llama", tie_word_embeddings=True), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["lm_head.weight"] = torch.zeros_like(weights["model.embed_tokens.weight"])
    save_file(weights, tmp_path / "model.safetensors")  # a stray head copy is ignored
    model = load_model(tmp_path, torch.float32, CPU)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.abs().sum() > 0


def test_dtype_is_applied(llama_dir: Path) -> None:
    model = load_model(llama_dir, torch.bfloat16, CPU)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def linear_kinds(model: LlamaForCausalLM) -> set[type[torch.nn.Module]]:
    projections = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
    return {type(m) for name, m in model.named_modules() if name.endswith(projections)}


def logits(model: LlamaForCausalLM, length: int = 12) -> torch.Tensor:
    ids = torch.arange(length) * 13 % model.config.vocab_size
    dtype = model.model.embed_tokens.weight.dtype
    kv = [(k.to(dtype), v.to(dtype)) for k, v in new_kv_cache(model.config)]
    return run(model, ids, prefill_batch(length), kv)


def test_float32_keeps_plain_linears(llama_dir: Path) -> None:
    assert linear_kinds(load_model(llama_dir, torch.float32, CPU)) == {torch.nn.Linear}


@pytest.mark.skipif(not cpu_has_native_bfloat16(), reason="no native bfloat16 on this CPU")
def test_bfloat16_on_a_native_cpu_packs_every_linear(
    llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = load_model(llama_dir, torch.bfloat16, CPU)
    assert linear_kinds(packed) == {PackedLinear}
    monkeypatch.setattr(loader, "cpu_has_native_bfloat16", lambda: False)
    plain = load_model(llama_dir, torch.bfloat16, CPU)
    assert linear_kinds(plain) == {torch.nn.Linear}
    assert torch.equal(logits(packed), logits(plain))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_a_16_bit_checkpoint_keeps_its_weights_under_float32(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    path = save_hf(make_hf_model("llama").to(dtype), tmp_path)
    kept = load_model(path, torch.float32, CPU)
    assert linear_kinds(kept) == {QuantizedLinear}
    parts = [part for m in kept.modules() if isinstance(m, QuantizedLinear) for part in m.parts]
    assert {part.values.dtype for part in parts} == {dtype}
    widened = load_model(path, torch.float32, CPU, quantization="none")
    assert linear_kinds(widened) == {torch.nn.Linear}
    # A decode's single row and a short prefill's on the kernels, a long prefill's on the GEMM.
    for length in (1, 12, max(HALF_DEQUANTIZE_ROWS, HALF_AVX2_DEQUANTIZE_ROWS) + 4):
        torch.testing.assert_close(logits(kept, length), logits(widened, length), rtol=0, atol=1e-5)


def test_int8_weights_stay_close_to_float32(llama_dir: Path) -> None:
    int8 = load_model(llama_dir, torch.float32, CPU, quantization="int8")
    assert linear_kinds(int8) == {QuantizedLinear}
    expected = logits(load_model(llama_dir, torch.float32, CPU))
    assert (logits(int8) - expected).abs().max() < 0.05 * expected.abs().max()


def test_int8_weights_are_refused_off_the_cpu(llama_dir: Path) -> None:
    with pytest.raises(ValueError, match="CPU only"):
        load_model(llama_dir, torch.float32, torch.device("cuda"), quantization="int8")


def _edit_checkpoint(src: Path, dst: Path, edit: Any) -> Path:
    (dst / "config.json").write_text((src / "config.json").read_text())
    weights = load_file(src / "model.safetensors")
    edit(weights)
    save_file(weights, dst / "model.safetensors")
    return dst


def test_rotary_inv_freq_is_ignored(llama_dir: Path, tmp_path: Path) -> None:
    def add(weights: dict[str, torch.Tensor]) -> None:
        weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    load_model(_edit_checkpoint(llama_dir, tmp_path, add), torch.float32, CPU)


def test_missing_and_unexpected_weights_are_named(llama_dir: Path, tmp_path: Path) -> None:
    def edit(weights: dict[str, torch.Tensor]) -> None:
        weights["model.layers.1.mlp.up_proj.bias"] = torch.zeros(128)
        del weights["model.layers.0.self_attn.k_proj.weight"]

    path = _edit_checkpoint(llama_dir, tmp_path, edit)
    with pytest.raises(ValueError) as caught:
        load_model(path, torch.float32, CPU)
    assert "missing model.layers.0.self_attn.k_proj.weight" in str(caught.value)
    assert "unexpected model.layers.1.mlp.up_proj.bias" in str(caught.value)


def test_wrong_shape_is_named(llama_dir: Path, tmp_path: Path) -> None:
    def edit(weights: dict[str, torch.Tensor]) -> None:
        weights["model.norm.weight"] = torch.ones(32)

    with pytest.raises(ValueError, match=r"model.norm.weight has shape \(32,\)"):
        load_model(_edit_checkpoint(llama_dir, tmp_path, edit), torch.float32, CPU)


def test_directory_without_weights(llama_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((llama_dir / "config.json").read_text())
    with pytest.raises(ValueError, match=r"neither model\.safetensors nor"):
        load_model(tmp_path, torch.float32, CPU)
