"""GGUF files, written here the way llama.cpp's converter writes them, against transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from headrace.config import Quantization
from headrace.model.llama import RopeScaling
from headrace.model.loader import load_model, read_config
from headrace.model.quantized import QuantizedLinear
from tests.model.factories import (
    checkpoint_state,
    decode_batch,
    hf_logits,
    llama3_rope_factors,
    llama_cpp_permute,
    make_hf_model,
    new_kv_cache,
    prefill_batch,
    run,
    write_gguf,
)

CPU = torch.device("cpu")
IDS = torch.tensor([3, 141, 59, 26, 53, 58, 97, 93, 23, 84, 62, 64])


def logits_diff(reference: Any, path: Path) -> float:
    model = load_model(path, torch.float32, CPU)
    got = run(model, IDS, prefill_batch(len(IDS)), new_kv_cache(model.config))
    return float((got - hf_logits(reference, IDS)).abs().max())


def test_unpermute_reverses_llama_cpp_permutation() -> None:
    from headrace.model.gguf_file import unpermute_rotary

    weight = torch.arange(4 * 16 * 3, dtype=torch.float32).reshape(64, 3)
    permuted = llama_cpp_permute(weight, num_heads=4)
    assert not torch.equal(permuted, weight)
    assert torch.equal(unpermute_rotary(permuted, num_heads=4), weight)
    assert not torch.equal(unpermute_rotary(weight, num_heads=4), permuted)  # not self-inverse


@pytest.mark.parametrize("tied", [False, True])
def test_llama_gguf_matches_transformers(tmp_path: Path, tied: bool) -> None:
    reference = make_hf_model("llama", tie_word_embeddings=tied)
    path = write_gguf(reference, tmp_path / "tiny.gguf")
    config = read_config(path)
    assert config.tie_word_embeddings is tied
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 16)
    assert (config.vocab_size, config.max_position_embeddings) == (160, 128)
    assert logits_diff(reference, path) < 1e-4


def test_qwen2_gguf_keeps_its_biases_unpermuted(tmp_path: Path) -> None:
    reference = make_hf_model("qwen2")
    path = write_gguf(reference, tmp_path / "qwen.gguf", arch="qwen2")
    assert read_config(path).attention_bias
    assert logits_diff(reference, path) < 1e-4


def test_llama3_rope_freqs_become_rope_scaling(tmp_path: Path) -> None:
    reference = make_hf_model("llama3")
    factors = llama3_rope_factors(500000.0, head_dim=16)
    path = write_gguf(reference, tmp_path / "llama3.gguf", rope_freqs=factors)
    assert read_config(path).rope_scaling == RopeScaling(8.0, 1.0, 4.0, 8192)
    assert logits_diff(reference, path) < 1e-4


def test_unknown_rope_freqs_are_refused(tmp_path: Path) -> None:
    factors = np.linspace(1.0, 3.0, 8, dtype=np.float32)
    path = write_gguf(make_hf_model("llama"), tmp_path / "odd.gguf", rope_freqs=factors)
    with pytest.raises(ValueError, match="rope_freqs"):
        read_config(path)


@pytest.mark.parametrize("quantization", ["none", "auto"])
def test_q8_0_weights_keep_their_values(tmp_path: Path, quantization: Quantization) -> None:
    reference = make_hf_model("llama")
    q8 = gguf.GGMLQuantizationType.Q8_0
    path = write_gguf(reference, tmp_path / "q8.gguf", quantize=q8)
    model = load_model(path, torch.float32, CPU, quantization=quantization)
    kinds = {type(model.lm_head), type(model.model.layers[0].mlp.down_proj)}
    assert kinds == ({QuantizedLinear} if quantization == "auto" else {torch.nn.Linear})
    loaded_state = checkpoint_state(model)
    for name, weight in reference.state_dict().items():
        expected = weight.numpy()
        if expected.ndim == 2:
            expected = gguf.quants.dequantize(gguf.quants.quantize(expected, q8), q8)
        loaded = loaded_state[name].numpy()
        assert np.array_equal(loaded, expected), name


def _mixed_types(name: str) -> gguf.GGMLQuantizationType:
    # As llama.cpp's mixes do: v and down in more bits than the rest.
    Q = gguf.GGMLQuantizationType
    return Q.Q8_0 if ".v_proj." in name or "down_proj" in name else Q.Q4_1


@pytest.mark.parametrize(
    ("kind", "tied"),
    [("q4_0", True), ("q4_1", False), ("q8_0", True), ("mixed", False)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_quantized_weights_served_as_stored_match_their_dequantized_model(
    tmp_path: Path, kind: str, tied: bool, dtype: torch.dtype
) -> None:
    reference = make_hf_model("llama", tie_word_embeddings=tied)
    types = _mixed_types if kind == "mixed" else gguf.GGMLQuantizationType[kind.upper()]
    path = write_gguf(reference, tmp_path / f"{kind}.gguf", quantize=types)
    stored = load_model(path, dtype, CPU)
    dequantized = load_model(path, dtype, CPU, quantization="none")
    layer = stored.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, QuantizedLinear)
    assert isinstance(stored.lm_head, QuantizedLinear)
    assert len(layer.self_attn.qkv_proj.parts) == (2 if kind == "mixed" else 1)
    ids = torch.randint(0, 160, (12,), generator=torch.Generator().manual_seed(0))
    kv = [(k.to(dtype), v.to(dtype)) for k, v in new_kv_cache(stored.config)]
    kv_plain = [(k.to(dtype), v.to(dtype)) for k, v in new_kv_cache(stored.config)]
    expected = run(dequantized, ids, prefill_batch(12), kv_plain)
    got = run(stored, ids, prefill_batch(12), kv)
    # 12 rows ran the integer kernels: 8-bit activations, so close, not equal.
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    step = run(stored, ids[-1:], decode_batch(12), kv)
    step_plain = run(dequantized, ids[-1:], decode_batch(12), kv_plain)
    assert (step - step_plain).abs().max() < 0.05 * step_plain.abs().max()


@pytest.mark.parametrize(("kind", "dtype"), [("F16", torch.float16), ("BF16", torch.bfloat16)])
def test_16_bit_weights_stay_16_bit_under_float32_activations(
    tmp_path: Path, kind: str, dtype: torch.dtype
) -> None:
    reference = make_hf_model("llama")
    path = write_gguf(reference, tmp_path / "half.gguf", quantize=gguf.GGMLQuantizationType[kind])
    stored = load_model(path, torch.float32, CPU)
    widened = load_model(path, torch.float32, CPU, quantization="none")
    down = stored.model.layers[0].mlp.down_proj
    assert isinstance(down, QuantizedLinear) and isinstance(stored.lm_head, QuantizedLinear)
    assert [part.values.dtype for part in down.parts] == [dtype]
    kept = checkpoint_state(stored)
    for name, weight in checkpoint_state(widened).items():
        assert torch.equal(kept[name], weight), name
    # The same weights multiplying the same float32 activations: equal but for summation order.
    kv, kv_widened = new_kv_cache(stored.config), new_kv_cache(stored.config)
    for batch, ids in ((prefill_batch(12), IDS), (decode_batch(12), IDS[-1:])):
        expected = run(widened, ids, batch, kv_widened)
        torch.testing.assert_close(run(stored, ids, batch, kv), expected, rtol=0, atol=1e-5)
    # Under bfloat16 activations they are converted, for oneDNN.
    converted = load_model(path, torch.bfloat16, CPU)
    assert not any(isinstance(m, QuantizedLinear) for m in converted.modules())


def test_a_projection_partly_in_float_is_dequantized_whole(tmp_path: Path) -> None:
    # v in float32, q and k in Q8_0: the fused qkv_proj becomes one float weight.
    reference = make_hf_model("llama")

    def types(name: str) -> gguf.GGMLQuantizationType | None:
        return None if ".v_proj." in name else gguf.GGMLQuantizationType.Q8_0

    model = load_model(
        write_gguf(reference, tmp_path / "part.gguf", quantize=types), torch.float32, CPU
    )
    assert type(model.model.layers[0].self_attn.qkv_proj) is torch.nn.Linear
    assert isinstance(model.model.layers[0].self_attn.o_proj, QuantizedLinear)
    none = load_model(tmp_path / "part.gguf", torch.float32, CPU, quantization="none")
    loaded = checkpoint_state(model)
    for name, weight in checkpoint_state(none).items():
        assert torch.equal(loaded[name], weight), name


def test_unsupported_architecture(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "phi.gguf", "phi3")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'phi3'"):
        read_config(tmp_path / "phi.gguf")


@pytest.mark.parametrize(
    ("dtype", "quantization"),
    [
        (torch.float32, "none"),
        (torch.bfloat16, "none"),
        (torch.float32, "auto"),
        (torch.bfloat16, "auto"),
        (torch.bfloat16, "int8"),
    ],
    ids=["float32", "bfloat16", "q4_1-float32", "q4_1-bfloat16", "int8"],
)
def test_smollm2_q4_1_knows_the_capital_of_france(
    default_model_path: Path, dtype: torch.dtype, quantization: Quantization
) -> None:
    model = load_model(default_model_path, dtype, CPU, quantization=quantization)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.head_dim) == (
        30,
        576,
        9,
        64,
    )
    assert c.tie_word_embeddings and c.vocab_size == 49152 and c.rope_theta == 100000.0
    ids = torch.tensor([504, 3575, 282, 4649, 314])  # "The capital of France is"
    kv = [(k.to(dtype), v.to(dtype)) for k, v in new_kv_cache(c, max_len=16)]
    tokens = [int(run(model, ids, prefill_batch(len(ids)), kv)[-1].argmax())]
    for position in range(len(ids), len(ids) + 2):
        step = run(model, torch.tensor(tokens[-1:]), decode_batch(position), kv)
        tokens.append(int(step[-1].argmax()))
    assert tokens == [7042, 30, 198]  # " Paris", ".", "\n"
