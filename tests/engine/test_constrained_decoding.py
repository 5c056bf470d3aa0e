"""Grammars steer a tiny random model, whose own choices are never JSON, to valid output."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import llguidance
import pytest

from headrace.engine.async_engine import AsyncEngine, EngineError
from headrace.engine.llm_engine import LLMEngine
from headrace.text import Tokenizer
from headrace.text.grammar import CompiledGrammar, GrammarCompiler
from tests.engine.factories import (
    make_engine,
    make_model,
    make_params,
    run_to_completion,
    run_with_outputs,
)

PROMPT = [5, 17, 42, 99, 7]
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
        "tag": {"enum": ["a", "b"]},
    },
    "required": ["ok", "n", "tag"],
}


def tiny_engine(tokenizer: Tokenizer, extra_vocab: int = 0, **kwargs: Any) -> LLMEngine:
    return make_engine(make_model(vocab_size=tokenizer.vocab_size + extra_vocab), **kwargs)


def test_the_model_alone_writes_no_json(tiny_tokenizer: Tokenizer) -> None:
    engine = tiny_engine(tiny_tokenizer)
    engine.add_request("free", PROMPT, make_params(max_tokens=30))
    text = tiny_tokenizer.decode(run_to_completion(engine)["free"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


SAMPLINGS: list[dict[str, Any]] = [
    {"temperature": 0.0},
    *({"temperature": 1.0, "seed": seed} for seed in range(4)),
    {"temperature": 0.7, "top_p": 0.9, "seed": 5},
]


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=str)
def test_a_schema_grammar_gives_valid_json_and_stops(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer, sampling: dict[str, Any]
) -> None:
    engine = tiny_engine(tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_ids
    params = make_params(
        max_tokens=60,
        stop_token_ids=eos,
        grammar=tiny_compiler.json_schema(SCHEMA, strict=True),
        **sampling,
    )
    engine.add_request("json", PROMPT, params)
    tokens, last = run_with_outputs(engine)["json"]
    assert last.output.finish_reason == "stop"
    assert not eos & set(tokens)  # the grammar ended it, not an end-of-sequence token
    jsonschema.validate(json.loads(tiny_tokenizer.decode(tokens)), SCHEMA)


def test_json_object_output_is_always_on_track(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    engine = tiny_engine(tiny_tokenizer)
    grammar = tiny_compiler.json_object()
    for seed in range(3):
        params = make_params(max_tokens=25, temperature=1.0, seed=seed, grammar=grammar)
        engine.add_request(str(seed), PROMPT, params)
    for tokens, last in run_with_outputs(engine).values():
        if last.output.finish_reason == "stop":
            assert isinstance(json.loads(tiny_tokenizer.decode(tokens)), dict)
        else:  # cut off by max_tokens: still a prefix of some JSON object
            assert grammar.matcher().consume_tokens(tokens)


def test_unconstrained_requests_are_unaffected_by_constrained_ones(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    alone = tiny_engine(tiny_tokenizer)
    alone.add_request("free", PROMPT, make_params(max_tokens=20))
    expected = run_to_completion(alone)["free"]

    engine = tiny_engine(tiny_tokenizer)
    grammar = tiny_compiler.json_schema(SCHEMA, strict=True)
    engine.add_request("json", [3, 1, 4], make_params(max_tokens=60, grammar=grammar))
    engine.add_request("free", PROMPT, make_params(max_tokens=20))
    engine.add_request("json2", PROMPT, make_params(max_tokens=60, grammar=grammar))
    results = run_with_outputs(engine)
    assert results["free"][0] == expected
    for request_id in ("json", "json2"):
        jsonschema.validate(json.loads(tiny_tokenizer.decode(results[request_id][0])), SCHEMA)


@pytest.mark.parametrize("extra_vocab", [37, -20], ids=["model-larger", "model-smaller"])
def test_model_and_tokenizer_vocabularies_may_differ(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer, extra_vocab: int
) -> None:
    engine = tiny_engine(tiny_tokenizer, extra_vocab)
    grammar = tiny_compiler.json_schema(SCHEMA, strict=True)
    for seed in range(3):
        params = make_params(max_tokens=60, temperature=1.0, seed=seed, grammar=grammar)
        engine.add_request(str(seed), PROMPT, params)
    for tokens, last in run_with_outputs(engine).values():
        assert last.output.finish_reason == "stop"
        assert max(tokens) < min(tiny_tokenizer.vocab_size, tiny_tokenizer.vocab_size + extra_vocab)
        jsonschema.validate(json.loads(tiny_tokenizer.decode(tokens)), SCHEMA)


class RefusingMatcher:
    """A real matcher that refuses the n-th token it is given (which a sound grammar never does)."""

    def __init__(self, matcher: llguidance.LLMatcher, refuse_at: int) -> None:
        self._matcher = matcher
        self._left = refuse_at
        self._refused = False

    def unsafe_compute_mask_ptr(self, pointer: int, size: int) -> None:
        self._matcher.unsafe_compute_mask_ptr(pointer, size)

    def consume_token(self, token: int) -> bool:
        self._left -= 1
        self._refused = self._refused or self._left == 0
        return not self._refused and self._matcher.consume_token(token)

    def is_error(self) -> bool:
        return self._refused or self._matcher.is_error()

    def get_error(self) -> str:
        return "refused on purpose" if self._refused else self._matcher.get_error()

    def is_stopped(self) -> bool:
        return self._refused or self._matcher.is_stopped()


class RefusingGrammar:
    def __init__(self, grammar: CompiledGrammar, refuse_at: int) -> None:
        self.vocab_size = grammar.vocab_size
        self._grammar = grammar
        self._refuse_at = refuse_at

    def matcher(self) -> llguidance.LLMatcher:
        return RefusingMatcher(self._grammar.matcher(), self._refuse_at)  # type: ignore[return-value]


def test_a_refused_token_fails_only_its_request(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    engine = tiny_engine(tiny_tokenizer)
    refusing = RefusingGrammar(tiny_compiler.json_schema(SCHEMA, strict=True), refuse_at=3)
    engine.add_request("bad", PROMPT, make_params(max_tokens=20, grammar=refusing))
    engine.add_request("good", PROMPT, make_params(max_tokens=20))
    results = run_with_outputs(engine)
    tokens, last = results["bad"]
    assert last.output.finish_reason == "abort" and last.error is not None
    assert len(tokens) == 2 and last.output.num_generated_tokens == 3
    assert len(results["good"][0]) == 20
    assert not engine.has_work


async def test_a_refused_token_reaches_the_stream_as_an_engine_error(
    tiny_compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    engine = AsyncEngine.build(lambda: tiny_engine(tiny_tokenizer))
    engine.start()
    try:
        refusing = RefusingGrammar(tiny_compiler.json_schema(SCHEMA, strict=True), refuse_at=2)
        params = make_params(max_tokens=20, grammar=refusing)
        with pytest.raises(EngineError, match="grammar"):
            async for _ in engine.generate("bad", PROMPT, params):
                pass
        outputs = [out async for out in engine.generate("good", PROMPT, make_params())]
        assert outputs[-1].finish_reason == "length"
    finally:
        engine.shutdown()
