"""A fault in one request's part of a step ends that request alone; the rest run on unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llguidance
import pytest
import torch

from headrace.engine import sampler
from headrace.engine.async_engine import AsyncEngine, EngineError
from headrace.engine.grammar_bitmask import GrammarBitmask
from headrace.engine.llm_engine import LLMEngine, RequestOutput
from headrace.engine.request import Request
from headrace.text import Tokenizer
from headrace.text.grammar import GrammarCompiler
from tests.engine.factories import make_engine, make_model, make_params, run_with_outputs

PROMPTS = {"a": [5, 6, 7, 8], "b": [9, 10, 11], "c": [12, 13, 14, 15, 16], "bad": [17, 18]}


def add_all(engine: LLMEngine, **params: dict[str, Any]) -> None:
    """Every prompt of PROMPTS, with its own params where given."""
    for request_id, prompt in PROMPTS.items():
        engine.add_request(request_id, prompt, make_params(**params.get(request_id, {})))


def failing_on_call(n: int, work: Callable[..., Any]) -> Callable[..., Any]:
    """`work`, except that its nth call (and every one after) raises."""
    calls = 0

    def maybe_failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls >= n:
            raise RuntimeError("injected fault")
        return work(*args)

    return maybe_failing


def assert_failed_alone(
    faulty: dict[str, tuple[list[int], RequestOutput]],
    clean: dict[str, tuple[list[int], RequestOutput]],
    engine: LLMEngine,
) -> None:
    tokens, last = faulty.pop("bad")
    assert last.output.finish_reason == "abort" and last.error is not None
    assert "injected fault" in last.error
    assert tokens == clean.pop("bad")[0][: len(tokens)]
    assert {rid: result[0] for rid, result in faulty.items()} == {
        rid: result[0] for rid, result in clean.items()
    }
    assert not engine.has_work and engine.blocks.pool.num_used == 0


# Seeded sampling for the others: a fault must not shift their random streams either.
SAMPLED = {"a": {"temperature": 1.0, "seed": 1}, "b": {"temperature": 0.7, "seed": 2}}


def test_a_sampling_fault_fails_only_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {**SAMPLED, "bad": {"temperature": 1.0, "top_p": 0.9, "seed": 3}}
    clean = make_engine()
    add_all(clean, **params)
    expected = run_with_outputs(clean)
    # Only "bad" uses top-p: its third token fails.
    monkeypatch.setattr(sampler, "_top_p", failing_on_call(3, sampler._top_p))
    engine = make_engine()
    add_all(engine, **params)
    results = run_with_outputs(engine)
    assert len(results["bad"][0]) == 2
    assert_failed_alone(results, expected, engine)


def test_a_fault_taking_its_token_fails_only_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = make_engine()
    add_all(clean, **SAMPLED)
    expected = run_with_outputs(clean)
    advance = LLMEngine._advance_grammar
    failing = failing_on_call(4, advance)

    def advance_or_fail(request: Request, token: int) -> None:
        (failing if request.request_id == "bad" else advance)(request, token)

    monkeypatch.setattr(LLMEngine, "_advance_grammar", staticmethod(advance_or_fail))
    engine = make_engine()
    add_all(engine, **SAMPLED)
    results = run_with_outputs(engine)
    assert len(results["bad"][0]) == 3
    assert_failed_alone(results, expected, engine)


def test_a_grammar_mask_fault_fails_only_its_request(
    monkeypatch: pytest.MonkeyPatch, tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    model = make_model(vocab_size=tiny_tokenizer.vocab_size)
    grammar = tiny_compiler.json_object()
    params: dict[str, dict[str, Any]] = {
        "a": {"grammar": grammar, "max_tokens": 12},
        "bad": {"grammar": grammar, "max_tokens": 12},
    }
    clean = make_engine(model)
    add_all(clean, **params)
    expected = run_with_outputs(clean)
    fill = GrammarBitmask._fill
    failing = failing_on_call(2, fill)

    def fill_or_fail(self: GrammarBitmask, packed: torch.Tensor, request: Request) -> None:
        (failing if request.request_id == "bad" else fill)(self, packed, request)

    monkeypatch.setattr(GrammarBitmask, "_fill", fill_or_fail)
    engine = make_engine(model)
    add_all(engine, **params)
    results = run_with_outputs(engine)
    assert len(results["bad"][0]) == 1
    assert_failed_alone(results, expected, engine)


def test_a_model_fault_fails_its_step_and_the_engine_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean = make_engine(max_num_seqs=2)
    add_all(clean)
    expected = run_with_outputs(clean)
    engine = make_engine(max_num_seqs=2)
    add_all(engine)
    engine.step()  # "a" and "b" prefill; "c" and "bad" wait
    model = engine.runner.model
    monkeypatch.setattr(model, "forward", failing_on_call(1, model.forward))
    failed = engine.step()
    assert {out.request_id for out in failed} == {"a", "b"}
    assert all(out.output.finish_reason == "abort" and out.error for out in failed)
    monkeypatch.undo()
    results = run_with_outputs(engine)
    assert {rid: result[0] for rid, result in results.items()} == {
        rid: expected[rid][0] for rid in ("c", "bad")
    }
    engine.add_request("again", PROMPTS["a"], make_params())
    assert run_with_outputs(engine)["again"][0] == expected["a"][0]
    assert engine.blocks.pool.num_used == 0


class UnstartableGrammar:
    """A grammar whose matcher cannot be made."""

    vocab_size = 96

    def matcher(self) -> llguidance.LLMatcher:
        raise RuntimeError("injected fault")


async def test_a_request_that_cannot_start_fails_alone() -> None:
    engine = AsyncEngine.build(make_engine)
    engine.start()
    try:
        bad = engine.generate("bad", [1, 2, 3], make_params(grammar=UnstartableGrammar()))
        with pytest.raises(EngineError, match="injected fault"):
            await anext(bad)
        outputs = [out async for out in engine.generate("good", [1, 2, 3], make_params())]
        assert outputs[-1].finish_reason == "length"
    finally:
        engine.shutdown()
