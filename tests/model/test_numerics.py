"""headrace's Llama family against transformers, through the loader, in float32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.llama import LlamaForCausalLM
from headrace.model.loader import load_model
from tests.model.factories import (
    block_table,
    decode_batch,
    hf_logits,
    make_hf_model,
    new_kv_cache,
    prefill_batch,
    run,
    save_hf,
)

CPU = torch.device("cpu")
TOLERANCE = 1e-4
KINDS = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama3-rope-scaling": ("llama3", {}),
    "mistral": ("mistral", {}),
    "qwen2-qkv-bias": ("qwen2", {}),
}


@pytest.fixture(scope="module", params=list(KINDS))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    kind, overrides = KINDS[request.param]
    reference = make_hf_model(kind, **overrides)
    path = save_hf(reference, tmp_path_factory.mktemp(request.param))
    return reference, load_model(path, torch.float32, CPU)


def prompt(length: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 160, (length,), generator=torch.Generator().manual_seed(seed))


def full_logits(model: LlamaForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    return run(model, ids, prefill_batch(len(ids)), new_kv_cache(model.config))


def test_full_prefill_matches_transformers(pair: Any) -> None:
    reference, model = pair
    ids = prompt()
    expected = hf_logits(reference, ids)
    assert (full_logits(model, ids) - expected).abs().max().item() < TOLERANCE


def test_chunked_prefill_matches_one_prefill(pair: Any) -> None:
    _, model = pair
    ids = prompt()
    expected = full_logits(model, ids)
    kv = new_kv_cache(model.config)
    first = run(model, ids[:5], prefill_batch(5), kv)
    second = run(model, ids[5:], prefill_batch(len(ids) - 5, cached_len=5), kv)
    assert (torch.cat((first, second)) - expected).abs().max().item() < TOLERANCE


def test_padding_rows_change_neither_logits_nor_cache(pair: Any) -> None:
    # The runner pads steps with prefills to a bucketed size: rows past the batch's tokens.
    _, model = pair
    ids = prompt()
    kv, padded_kv = new_kv_cache(model.config), new_kv_cache(model.config)
    run(model, ids[:5], prefill_batch(5), kv)
    run(model, ids[:5], prefill_batch(5), padded_kv)
    expected = run(model, ids[5:], prefill_batch(len(ids) - 5, cached_len=5), kv)
    batch = prefill_batch(len(ids) - 5, cached_len=5)
    padded = replace(
        batch, positions=torch.cat((batch.positions, torch.zeros(7, dtype=torch.long)))
    )
    logits = run(model, torch.cat((ids[5:], torch.zeros(7, dtype=torch.long))), padded, padded_kv)
    assert logits.shape[0] == len(ids) - 5 + 7
    assert (logits[: len(ids) - 5] - expected).abs().max().item() < TOLERANCE
    # Matmuls of 9 and 16 rows may round differently (AVX2 kernels do): equal within float32
    # noise, while a wrong or shifted row would differ by the size of the values themselves.
    for layer, padded_layer in zip(kv, padded_kv, strict=True):
        for cache, padded_cache in zip(layer, padded_layer, strict=True):
            torch.testing.assert_close(padded_cache, cache, rtol=1e-4, atol=TOLERANCE)


def test_decoding_token_by_token_matches_one_prefill(pair: Any) -> None:
    _, model = pair
    ids = prompt()
    expected = full_logits(model, ids)
    kv = new_kv_cache(model.config)
    rows = [run(model, ids[:3], prefill_batch(3), kv)]
    for position in range(3, len(ids)):
        rows.append(run(model, ids[position : position + 1], decode_batch(position), kv))
    assert (torch.cat(rows) - expected).abs().max().item() < TOLERANCE


def test_decodes_and_prefill_in_one_batch_match_separate_runs(pair: Any) -> None:
    _, model = pair
    a, b = prompt(9, seed=2), prompt(11, seed=3)
    expected_a, expected_b = full_logits(model, a), full_logits(model, b)
    kv = new_kv_cache(model.config, slots=3)
    run(model, a[:8], prefill_batch(8, slot=2, slots=3), kv)
    # a's last token decodes while b's prompt prefills, in one flat batch.
    decode, prefill = decode_batch(8, slot=2, slots=3), prefill_batch(len(b), slot=0, slots=3)
    batch = AttentionBatch(
        slot_mapping=torch.cat((decode.slot_mapping, prefill.slot_mapping)),
        positions=torch.cat((decode.positions, prefill.positions)),
        decode_block_tables=decode.decode_block_tables,
        decode_lens=decode.decode_lens,
        prefills=(PrefillSpan(block_table(len(b), 0, 3), 1, cached_len=0, length=len(b)),),
    )
    logits = run(model, torch.cat((a[8:], b)), batch, kv)
    assert (logits[0] - expected_a[-1]).abs().max().item() < TOLERANCE
    assert (logits[1:] - expected_b).abs().max().item() < TOLERANCE


def test_bfloat16_load_stays_close(pair: Any, tmp_path: Path) -> None:
    reference, model = pair
    path = save_hf(reference, tmp_path)
    low = load_model(path, torch.bfloat16, CPU)
    assert low.model.embed_tokens.weight.dtype == torch.bfloat16
    assert low.model.rope.dtype == torch.bfloat16
    ids = prompt()
    expected = full_logits(model, ids)
    got = run(low, ids, prefill_batch(len(ids)), _bf16_cache(low))
    assert (got - expected).abs().max().item() < 0.1 * expected.abs().max().item()


def _bf16_cache(model: LlamaForCausalLM) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k.bfloat16(), v.bfloat16()) for k, v in new_kv_cache(model.config)]
