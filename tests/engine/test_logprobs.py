"""Log-probabilities of generated and prompt tokens, against transformers' forward pass."""

from pathlib import Path

import pytest
import torch

from headrace.engine.kv_cache import bytes_per_token
from headrace.engine.llm_engine import LLMEngine
from headrace.engine.logprobs import position_logprobs
from headrace.engine.outputs import PositionLogprobs, TokenOutput
from tests.engine.factories import make_engine, make_params
from tests.engine.test_llm_engine import PROMPTS, hf_twin
from tests.model.factories import hf_logits

PROMPT = [4, 4, 8, 15, 16, 23, 42, 7, 3, 1, 2, 9, 11, 13, 17, 19, 23, 29, 31, 37, 41]


def outputs_of(engine: LLMEngine) -> dict[str, list[TokenOutput]]:
    found: dict[str, list[TokenOutput]] = {}
    while engine.has_work:
        for out in engine.step():
            assert out.error is None, out.error
            found.setdefault(out.request_id, []).append(out.output)
    return found


def reference(hf: object, ids: list[int]) -> torch.Tensor:
    # -> [T, V]: log-probabilities of the token after each position
    return torch.log_softmax(hf_logits(hf, torch.tensor(ids)), dim=-1)


def assert_position(found: PositionLogprobs, expected: torch.Tensor, token: int, top: int) -> None:
    assert found.chosen.token_id == token
    assert found.chosen.logprob == pytest.approx(float(expected[token]), abs=1e-4)
    values, ids = expected.topk(top)
    assert [t.token_id for t in found.top] == ids.tolist()
    assert [t.logprob for t in found.top] == pytest.approx(values.tolist(), abs=1e-4)


def test_sampled_tokens_carry_their_logprobs_and_top_alternatives(tmp_path: Path) -> None:
    hf, ours = hf_twin(tmp_path, "llama")
    engine = make_engine(ours)
    engine.add_request("r", PROMPTS["b"], make_params(max_tokens=6, logprobs=3))
    outputs = outputs_of(engine)["r"]
    tokens = [t for out in outputs for t in out.token_ids]
    logprobs = [lp for out in outputs for lp in out.logprobs or ()]
    assert len(logprobs) == len(tokens) == 6
    expected = reference(hf, PROMPTS["b"] + tokens)
    for i, (token, found) in enumerate(zip(tokens, logprobs, strict=True)):
        assert_position(found, expected[len(PROMPTS["b"]) - 1 + i], token, top=3)


@pytest.mark.parametrize("budget", [64, 8])  # 8: the prompt is scored over chunks
def test_prompt_logprobs_match_transformers_with_max_tokens_0(tmp_path: Path, budget: int) -> None:
    hf, ours = hf_twin(tmp_path, "llama")
    engine = make_engine(ours, max_num_batched_tokens=budget)
    engine.add_request("r", PROMPT, make_params(max_tokens=0, prompt_logprobs=2))
    [output] = outputs_of(engine)["r"]
    assert output.finish_reason == "length"
    assert output.token_ids == [] and output.num_generated_tokens == 0
    assert output.prompt_logprobs is not None and len(output.prompt_logprobs) == len(PROMPT) - 1
    expected = reference(hf, PROMPT)
    for i, found in enumerate(output.prompt_logprobs):
        assert_position(found, expected[i], PROMPT[i + 1], top=2)
    assert engine.blocks.pool.num_used == 0


def test_a_cached_prefix_is_computed_again_to_score_it() -> None:
    engine = make_engine(block_size=8)
    engine.add_request("warm", PROMPT, make_params(max_tokens=1))
    outputs_of(engine)
    engine.add_request("scored", PROMPT, make_params(max_tokens=1, prompt_logprobs=0))
    [output] = outputs_of(engine)["scored"]
    assert output.num_cached_tokens == 0
    assert output.prompt_logprobs is not None and len(output.prompt_logprobs) == len(PROMPT) - 1
    assert all(p.top == () for p in output.prompt_logprobs)


def test_prompt_logprobs_come_once_on_the_first_output() -> None:
    engine = make_engine()
    engine.add_request("r", PROMPT, make_params(max_tokens=4, prompt_logprobs=1, logprobs=0))
    outputs = outputs_of(engine)["r"]
    assert outputs[0].prompt_logprobs is not None
    assert all(out.prompt_logprobs is None for out in outputs[1:])
    assert all(
        out.logprobs is not None and len(out.logprobs) == len(out.token_ids) for out in outputs
    )


def test_preempted_requests_score_each_prompt_position_once(tmp_path: Path) -> None:
    hf, ours = hf_twin(tmp_path, "llama")
    # 19 usable blocks of 8 tokens: four requests growing to 61 tokens need 32; prompts chunked.
    memory = 20 * 8 * bytes_per_token(ours.config, torch.float32)
    engine = make_engine(ours, block_size=8, kv_cache_memory=memory, max_num_batched_tokens=8)
    prompts = {str(i): PROMPT[i:] + PROMPT[:i] for i in range(4)}
    for request_id, prompt in prompts.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=40, prompt_logprobs=0))
    outputs = outputs_of(engine)
    assert engine.scheduler.num_preemptions > 0
    for request_id, prompt in prompts.items():
        first = outputs[request_id][0].prompt_logprobs
        assert first is not None
        assert [p.chosen.token_id for p in first] == prompt[1:]
        expected = reference(hf, prompt)
        for i, found in enumerate(first):
            assert found.chosen.logprob == pytest.approx(
                float(expected[i, prompt[i + 1]]), abs=1e-4
            )


def test_logprobs_are_those_after_the_bias() -> None:
    engine = make_engine()
    engine.add_request("free", PROMPT, make_params(max_tokens=1, logprobs=2))
    [free] = (outputs_of(engine)["free"][0].logprobs or ())[:1]
    favourite, runner_up = free.top
    params = make_params(max_tokens=1, logprobs=1, logit_bias=((favourite.token_id, -100.0),))
    engine.add_request("biased", PROMPT, params)
    [biased] = outputs_of(engine)["biased"][0].logprobs or ()
    # The favourite banned, the runner-up is picked, and it holds more of the mass than before.
    assert biased.chosen.token_id == runner_up.token_id
    assert biased.chosen.logprob > runner_up.logprob + 0.01
    assert biased.top == (biased.chosen,)


def test_a_logprob_is_never_minus_infinity() -> None:
    logits = torch.zeros(1, 8)
    logits[0, 0] = -torch.inf
    [impossible] = position_logprobs(logits, [0], [8])
    assert impossible.chosen.logprob == -9999.0
    assert impossible.top[-1].logprob == -9999.0


def test_min_tokens_holds_back_the_stop_tokens() -> None:
    engine = make_engine()
    engine.add_request("free", PROMPT, make_params(max_tokens=8))
    first = outputs_of(engine)["free"][0].token_ids[0]
    # The first token would end the sequence; min_tokens keeps it from doing so for 3 tokens.
    stop = frozenset({first})
    engine.add_request("held", PROMPT, make_params(max_tokens=8, min_tokens=3, stop_token_ids=stop))
    tokens = [t for out in outputs_of(engine)["held"] for t in out.token_ids]
    assert len(tokens) >= 3 and first not in tokens[:3]


def test_bad_logprob_counts_and_min_tokens_are_refused() -> None:
    for fields in ({"logprobs": 21}, {"prompt_logprobs": -1}, {"min_tokens": 9}):
        with pytest.raises(ValueError, match=next(iter(fields))):
            make_params(max_tokens=8, **fields)


def test_a_stop_token_has_its_logprobs_apart_from_the_output() -> None:
    engine = make_engine()
    engine.add_request("free", PROMPT, make_params(max_tokens=3))
    third = [t for out in outputs_of(engine)["free"] for t in out.token_ids][2]
    params = make_params(max_tokens=8, logprobs=1, stop_token_ids=frozenset({third}))
    engine.add_request("stopped", PROMPT, params)
    *_, last = outputs_of(engine)["stopped"]
    assert last.finish_reason == "stop" and third not in last.token_ids
    assert last.stop_logprobs is not None and last.stop_logprobs.chosen.token_id == third
    assert last.logprobs is not None and len(last.logprobs) == len(last.token_ids)
