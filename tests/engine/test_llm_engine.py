from pathlib import Path
from typing import Any

import pytest
import torch

from headrace.engine.kv_cache import bytes_per_token
from headrace.engine.outputs import SamplingParams
from headrace.model.kernel_caches import SHAPE_BUCKET, bucketed
from headrace.model.llama import LlamaForCausalLM
from headrace.model.loader import load_model
from tests.engine.factories import (
    CPU,
    make_engine,
    make_model,
    make_params,
    run_to_completion,
    run_with_outputs,
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


def test_steps_with_prefills_run_on_bucketed_token_counts() -> None:
    model, rows = make_model(), []
    model.register_forward_pre_hook(lambda _, args: rows.append(len(args[0])))
    engine = make_engine(model, max_num_seqs=4)
    for request_id, prompt in PROMPTS.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=3))
    run_to_completion(engine)
    # The first step prefills all three prompts (17 tokens); later ones decode up to 3.
    assert rows[0] == bucketed(sum(map(len, PROMPTS.values()))) == 2 * SHAPE_BUCKET
    assert all(n <= 3 for n in rows[1:])


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
    assert engine.blocks.pool.num_used == 0


def test_abort_frees_the_blocks_at_once() -> None:
    engine = make_engine()
    engine.add_request("r", PROMPTS["b"], make_params(max_tokens=50))
    engine.step()
    assert engine.stats().running == 1
    engine.abort("r")
    assert engine.stats().running == 0
    assert engine.blocks.pool.num_used == 0
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


def test_a_cached_prefix_gives_the_same_tokens_as_computing_it(tmp_path: Path) -> None:
    hf, ours = hf_twin(tmp_path, "llama")
    engine = make_engine(ours, block_size=8)
    shared = [(5 * i + 1) % 90 + 2 for i in range(27)]
    engine.add_request("first", [*shared, 3, 4], make_params(max_tokens=4))
    run_to_completion(engine)

    engine.add_request("second", [*shared, 70, 71, 72], make_params(max_tokens=12))
    outputs = []
    while engine.has_work:
        outputs += engine.step()
    assert outputs[-1].output.num_cached_tokens == 24  # 3 full blocks of the shared 27 tokens
    tokens = [t for out in outputs for t in out.output.token_ids]
    assert tokens == hf_greedy(hf, [*shared, 70, 71, 72], 12)


def test_without_prefix_caching_nothing_is_reported_cached() -> None:
    engine = make_engine(block_size=8, enable_prefix_caching=False)
    prompt = list(range(2, 30))
    engine.add_request("first", prompt, make_params(max_tokens=2))
    run_to_completion(engine)
    engine.add_request("second", prompt, make_params(max_tokens=2))
    outputs = [out for _ in range(3) for out in engine.step()]
    assert outputs[-1].output.num_cached_tokens == 0


def test_preempted_requests_finish_with_the_tokens_they_would_have_had(tmp_path: Path) -> None:
    hf, ours = hf_twin(tmp_path, "llama")
    # 19 usable blocks of 8 tokens: four requests growing to 51 tokens need 28.
    memory = 20 * 8 * bytes_per_token(ours.config, torch.float32)
    engine = make_engine(ours, block_size=8, kv_cache_memory=memory)
    prompts = {str(i): [(3 * i + j) % 90 + 2 for j in range(11)] for i in range(4)}
    for request_id, prompt in prompts.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=40))
    tokens = run_to_completion(engine)
    assert engine.scheduler.num_preemptions > 0
    for request_id, prompt in prompts.items():
        assert tokens[request_id] == hf_greedy(hf, prompt, 40), request_id
    assert engine.blocks.pool.num_used == 0


def test_a_cache_too_small_for_one_context_is_refused() -> None:
    model = make_model()
    memory = 16 * 8 * bytes_per_token(model.config, torch.float32)  # one block short
    with pytest.raises(ValueError, match="--kv-cache-memory"):
        make_engine(model, max_model_len=128, block_size=8, kv_cache_memory=memory)


def test_samples_of_one_prompt_compute_it_once() -> None:
    model, rows = make_model(), []
    model.register_forward_pre_hook(lambda _, args: rows.append(len(args[0])))
    engine = make_engine(model, block_size=8, max_num_batched_tokens=128)
    prompt = [(5 * i + 1) % 90 for i in range(42)]
    engine.add_request("0", prompt, make_params(max_tokens=3))
    engine.add_request("1", prompt, make_params(max_tokens=3), after="0")
    engine.add_request("2", prompt, make_params(max_tokens=3), after="0")
    first = engine.step()
    assert [out.request_id for out in first] == ["0"]  # the others wait for its prompt
    results = run_with_outputs(engine)
    # The followers found the leader's 5 full blocks cached, and computed only the last 2 tokens.
    assert [results[r][1].output.num_cached_tokens for r in ("1", "2")] == [40, 40]
    assert results["1"][0] == results["2"][0] == first[0].output.token_ids + results["0"][0]
    assert engine.scheduler.num_preemptions == 0 and engine.blocks.pool.num_used == 0


def test_a_follower_of_a_finished_or_unknown_leader_goes_at_once() -> None:
    engine = make_engine()
    engine.add_request("alone", [1, 2, 3], make_params(max_tokens=2), after="gone")
    assert [out.request_id for out in engine.step()] == ["alone"]


def test_outputs_tell_how_long_their_request_queued() -> None:
    engine = make_engine(max_num_seqs=1, kv_cache_memory=2**20)  # one at a time: each waits
    for request_id, prompt in PROMPTS.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=3))
    queued: dict[str, list[float | None]] = {}
    while engine.has_work:
        for out in engine.step():
            queued.setdefault(out.request_id, []).append(out.output.queued_s)
    for request_id, values in queued.items():
        (value,) = set(values)  # on every output, measured once
        assert value is not None and value >= 0, request_id
    assert queued["a"][0] < queued["b"][0] < queued["c"][0]


def test_a_request_never_scheduled_has_no_queue_time() -> None:
    engine = make_engine(max_num_seqs=1, kv_cache_memory=2**20)
    engine.add_request("a", PROMPTS["a"], make_params())
    engine.add_request("b", PROMPTS["b"], make_params())
    engine.step()
    queued = {out.request_id: out.output.queued_s for out in engine.abort_all()}
    assert queued["a"] is not None and queued["b"] is None
