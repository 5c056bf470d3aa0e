"""GGUF files, written here the way llama.cpp's converter writes them, against transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from headrace.model.llama import RopeScaling
from headrace.model.loader import load_model, read_config
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


def test_q8_0_weights_are_dequantized(tmp_path: Path) -> None:
    reference = make_hf_model("llama")
    q8 = gguf.GGMLQuantizationType.Q8_0
    model = load_model(write_gguf(reference, tmp_path / "q8.gguf", quantize=q8), torch.float32, CPU)
    loaded_state = checkpoint_state(model)
    for name, weight in reference.state_dict().items():
        expected = weight.numpy()
        if expected.ndim == 2:
            expected = gguf.quants.dequantize(gguf.quants.quantize(expected, q8), q8)
        loaded = loaded_state[name].numpy()
        assert np.array_equal(loaded, expected), name


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
    ("dtype", "int8_weights"),
    [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)],
    ids=["float32", "bfloat16", "int8"],
)
def test_smollm2_q4_1_knows_the_capital_of_france(
    default_model_path: Path, dtype: torch.dtype, int8_weights: bool
) -> None:
    model = load_model(default_model_path, dtype, CPU, int8_weights=int8_weights)
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
