"""Logit biases and penalties change exactly the logits they name, before the token is picked."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from headrace.engine import sampler
from headrace.engine.request import Request
from headrace.engine.sampler import sample
from tests.engine.factories import make_params

VOCAB = 8


def request_with(output: list[int], prompt: list[int] | None = None, **params: object) -> Request:
    request = Request("r", prompt or [7], make_params(**params))
    request.output_token_ids = output
    return request


def test_presence_and_frequency_penalties_follow_openais_formula() -> None:
    logits = torch.zeros(1, VOCAB)
    request = request_with([3, 3, 5], presence_penalty=0.5, frequency_penalty=0.25)
    assert sample(logits, [request]) == [0]
    expected = torch.zeros(VOCAB)
    expected[3] = -(2 * 0.25 + 0.5)
    expected[5] = -(1 * 0.25 + 0.5)
    assert torch.equal(logits[0], expected)


def test_negative_penalties_favour_repeats() -> None:
    logits = torch.zeros(1, VOCAB)
    assert sample(logits, [request_with([6], frequency_penalty=-1.0)]) == [6]


def test_repetition_penalty_shrinks_the_prompts_and_outputs_tokens_toward_unlikely() -> None:
    logits = torch.tensor([[3.0, 2.0, -1.0, 1.5, 0.0, 0.0, 0.0, 0.0]])
    request = request_with([2], prompt=[1, 4], repetition_penalty=2.0)
    assert sample(logits, [request]) == [0]
    assert logits[0].tolist() == [3.0, 1.0, -2.0, 1.5, 0.0, 0.0, 0.0, 0.0]


def test_logit_bias_is_added_and_wins_greedy() -> None:
    logits = torch.arange(VOCAB, dtype=torch.float32).unsqueeze(0)  # greedy: 7
    request = request_with([], logit_bias=((2, 100.0), (7, -100.0)))
    assert sample(logits, [request]) == [2]
    assert logits[0, 2] == 102 and logits[0, 7] == -93


def test_a_masked_token_stays_masked_whatever_its_bias() -> None:
    logits = torch.full((1, VOCAB), float("-inf"))
    logits[0, 1] = 0  # a grammar's mask leaves only token 1
    request = request_with([3], logit_bias=((3, 100.0),), frequency_penalty=-2.0)
    assert sample(logits, [request]) == [1]


def test_rows_without_biases_or_penalties_are_left_alone() -> None:
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(0))
    before = logits.clone()
    plain = request_with([1, 1])
    biased = request_with([1], logit_bias=((0, 5.0),))
    sample(logits, [plain, biased])
    assert torch.equal(logits[0], before[0])
    assert logits[1, 0] == before[1, 0] + 5


def test_a_bias_outside_the_vocabulary_fails_its_request_alone() -> None:
    # Serving refuses such ids with a 400; the engine still keeps others' tokens coming.
    logits = torch.zeros(2, VOCAB)
    broken = request_with([], logit_bias=((VOCAB + 3, 1.0),))
    fine = request_with([], logit_bias=((4, 1.0),))
    assert sample(logits, [broken, fine]) == [None, 4]
    assert broken.error is not None and fine.error is None


@pytest.mark.parametrize(
    "params",
    [
        {"presence_penalty": 2.5},
        {"frequency_penalty": -2.1},
        {"repetition_penalty": 0.0},
        {"logit_bias": ((1, 101.0),)},
    ],
)
def test_sampling_params_refuse_values_out_of_range(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_params(**params)


def test_draws_follow_the_probabilities_and_never_pick_a_zero() -> None:
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    generator = torch.Generator().manual_seed(0)
    counts = Counter(sampler._draw(probs, generator) for _ in range(20_000))
    assert set(counts) == {1, 3, 4}
    for token in (1, 3, 4):  # within 4 standard deviations of 20,000 draws
        assert abs(counts[token] / 20_000 - probs[token]) < 0.015


@pytest.mark.parametrize(
    ("flatness", "holding"), [(0.1, 64), (1.5, 1024), (8.0, None)], ids=["peaked", "broad", "flat"]
)
def test_the_nucleus_is_the_one_a_full_sort_finds(flatness: float, holding: int | None) -> None:
    # The nucleus lies among the top 64 candidates, the top 1,024, or past them (sorted whole).
    generator = torch.Generator().manual_seed(1)
    ranks = torch.randperm(20_000, generator=generator) + 1
    probs = torch.softmax(-ranks.double().log().float() / flatness * 2, dim=-1)
    first = next((k for k in (64, 1024) if probs.topk(k)[0].sum() >= 0.9), None)
    assert first == holding
    ordered, order = probs.sort(descending=True)
    ordered[ordered.cumsum(0) - ordered >= 0.9] = 0
    expected = torch.zeros_like(probs).scatter_(0, order, ordered)
    assert torch.equal(sampler._top_p(probs.clone(), 0.9), expected)


@pytest.mark.parametrize(
    ("params", "possible"),
    [
        ({"top_k": 2}, {3, 5}),
        ({"min_p": 0.5}, {3, 5}),  # 0.2 and 0.1 are under half of 0.4
        ({"top_k": 3, "min_p": 0.5}, {3, 5}),
        ({"top_k": 3, "top_p": 0.5}, {3, 5}),  # the nucleus of the top 3, renormalized
        ({"top_k": 1}, {3}),
        ({"min_p": 1.0}, {3}),
    ],
)
def test_top_k_and_min_p_keep_only_the_likeliest(
    params: dict[str, object], possible: set[int]
) -> None:
    probs = torch.tensor([0.0, 0.1, 0.0, 0.4, 0.2, 0.3])
    logits = probs.log().expand(400, -1).clone()
    drawn = {
        token
        for seed in range(400)
        for token in sample(logits[seed : seed + 1], [request_with([], temperature=1.0, **params)])
    }
    assert drawn == possible
