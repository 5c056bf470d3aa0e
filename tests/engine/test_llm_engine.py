from pathlib import Path
from typing import Any

import pytest
import torch

from headrace.engine.outputs import SamplingParams
from headrace.model.llama import LlamaForCausalLM
from headrace.model.loader import load_model
from tests.engine.factories import (
    CPU,
    make_engine,
    make_model,
    make_params,
    run_to_completion,
)
from tests.model.factories import make_hf_model, save_hf

PROMPTS = {"a": [1, 5, 9, 2, 33], "b": [4, 4, 8, 15, 16, 23, 42, 7, 3, 1, 2], "c": [60]}


def hf_twin(tmp_path: Path, kind: str) -> tuple[Any, LlamaForCausalLM]:
    """A random transformers model and headrace's load of its checkpoint."""
    hf = make_hf_model(kind)
    return hf, load_model(save_hf(hf, tmp_path), torch.float32, CPU)


def hf_greedy(hf: Any, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("budget", [64, 4])
def test_greedy_matches_transformers_in_one_batch(tmp_path: Path, kind: str, budget: int) -> None:
    hf, ours = hf_twin(tmp_path, kind)
    engine = make_engine(ours, max_num_batched_tokens=budget)
    for request_id, prompt in PROMPTS.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=12))
    tokens = run_to_completion(engine)
    for request_id, prompt in PROMPTS.items():
        assert tokens[request_id] == hf_greedy(hf, prompt, 12), request_id


def test_request_joining_mid_stream_does_not_change_others() -> None:
    engine = make_engine(make_model())
    engine.add_request("alone", PROMPTS["b"], make_params(max_tokens=10))
    alone = run_to_completion(engine)["alone"]

    engine.add_request("first", PROMPTS["b"], make_params(max_tokens=10))
    early = [out.output.token_ids[0] for _ in range(2) for out in engine.step()]
    engine.add_request("late", PROMPTS["a"], make_params(max_tokens=10))
    tokens = run_to_completion(engine)
    assert early + tokens["first"] == alone
    assert len(tokens["late"]) == 10


def test_max_tokens_finishes_with_length() -> None:
    engine = make_engine()
    engine.add_request("r", PROMPTS["a"], make_params(max_tokens=3))
    outputs = []
    while engine.has_work:
        outputs += engine.step()
    assert [o.output.finish_reason for o in outputs] == [None, None, "length"]
    assert outputs[-1].output.num_generated_tokens == 3
    assert outputs[-1].output.num_prompt_tokens == len(PROMPTS["a"])


def test_stop_token_finishes_with_stop_and_is_not_emitted() -> None:
    engine = make_engine()
    engine.add_request("probe", PROMPTS["a"], make_params(max_tokens=10))
    probe = run_to_completion(engine)["probe"]
    # The first token not seen before it ends the sequence when made a stop token.
    at = next(i for i, token in enumerate(probe) if token not in probe[:i] and i > 0)

    stop = frozenset({probe[at]})
    engine.add_request("r", PROMPTS["a"], make_params(max_tokens=10, stop_token_ids=stop))
    outputs = []
    while engine.has_work:
        outputs += engine.step()
    assert [t for o in outputs for t in o.output.token_ids] == probe[:at]
    assert outputs[-1].output.finish_reason == "stop"
    assert outputs[-1].output.num_generated_tokens == at + 1


def test_context_limit_finishes_with_length() -> None:
    engine = make_engine(max_model_len=16)
    engine.add_request("r", list(range(1, 13)), make_params(max_tokens=100))
    assert len(run_to_completion(engine)["r"]) == 4
    assert engine.kv_cache.num_free_slots == 4


def test_abort_frees_the_slot_at_once() -> None:
    engine = make_engine()
    engine.add_request("r", PROMPTS["b"], make_params(max_tokens=50))
    engine.step()
    assert engine.stats().running == 1
    engine.abort("r")
    assert engine.stats().running == 0
    assert engine.kv_cache.num_free_slots == 4
    assert not engine.has_work


def test_abort_of_a_waiting_request() -> None:
    engine = make_engine()
    engine.add_request("r", PROMPTS["b"], make_params())
    engine.abort("r")
    assert engine.stats().waiting == 0
    assert engine.step() == []


def sampled(engine_seed: int, request_seed: int | None) -> list[int]:
    torch.manual_seed(engine_seed)
    engine = make_engine()
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=request_seed)
    engine.add_request("r", PROMPTS["a"], params)
    return run_to_completion(engine)["r"]


def test_same_seed_same_tokens_whatever_the_global_state() -> None:
    assert sampled(1, request_seed=7) == sampled(2, request_seed=7)
    assert sampled(1, request_seed=7) != sampled(1, request_seed=8)


def test_top_p_tiny_is_greedy() -> None:
    greedy = make_engine()
    greedy.add_request("r", PROMPTS["b"], make_params(max_tokens=8))
    nucleus = make_engine()
    nucleus.add_request("r", PROMPTS["b"], make_params(max_tokens=8, temperature=1.0, top_p=1e-6))
    assert run_to_completion(nucleus) == run_to_completion(greedy)
