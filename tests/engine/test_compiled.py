"""The compiled decode step: transformers' tokens, one graph for every decode, eager fallback."""

import logging
import threading
from typing import Any

import pytest
import torch

from headrace.engine import llm_engine
from headrace.model.compiled import DecodeStep
from headrace.model.llama import LlamaForCausalLM
from tests.engine.factories import make_engine, make_params, run_to_completion
from tests.engine.test_llm_engine import PROMPTS, hf_greedy, hf_twin


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, LlamaForCausalLM]:
    return hf_twin(tmp_path_factory.mktemp("llama"), "llama")


def test_compiled_decoding_gives_transformers_tokens_without_compiling_again(
    twin: tuple[Any, LlamaForCausalLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf, ours = twin
    engine = make_engine(ours, block_size=8, enforce_eager=False)
    assert engine.wait_compiled(timeout=600) and engine.runner.decode_step is not None
    # Once warmed up, a step the graph did not cover would run eagerly; here it fails.
    set_stance = torch.compiler.set_stance
    monkeypatch.setattr(
        torch.compiler, "set_stance", lambda *_, **__: set_stance("fail_on_recompile")
    )
    # Requests arrive while others decode: steps of 1, 2 and 3 decodes, tables 1 to 6 wide.
    tokens: dict[str, list[int]] = {}
    for request_id, prompt in PROMPTS.items():
        engine.add_request(request_id, prompt, make_params(max_tokens=40))
        for _ in range(5):
            for out in engine.step():
                tokens.setdefault(out.request_id, []).extend(out.output.token_ids)
    for request_id, rest in run_to_completion(engine).items():
        tokens[request_id] += rest
    for request_id, prompt in PROMPTS.items():
        assert tokens[request_id] == hf_greedy(hf, prompt, 40), request_id
    assert engine.blocks.pool.num_used == 0


def test_where_compiling_fails_the_engine_decodes_eagerly(
    twin: tuple[Any, LlamaForCausalLM],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hf, ours = twin

    def no_compiler(*_: object, **__: object) -> None:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda *_, **__: no_compiler)
    with caplog.at_level(logging.WARNING, logger="headrace.model"):
        engine = make_engine(ours, enforce_eager=False)
        assert engine.wait_compiled(timeout=60)
    assert engine.runner.decode_step is None and not engine.stats().compiling
    assert "torch.compile failed, decoding eagerly: no C++ compiler found" in caplog.text
    engine.add_request("a", PROMPTS["a"], make_params(max_tokens=8))
    assert run_to_completion(engine)["a"] == hf_greedy(hf, PROMPTS["a"], 8)


def test_the_engine_decodes_eagerly_while_it_compiles_then_takes_the_compiled_step(
    twin: tuple[Any, LlamaForCausalLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf, ours = twin
    release, calls = threading.Event(), []

    def compile_slowly(model: LlamaForCausalLM, *_: object) -> DecodeStep:
        release.wait()

        def step(input_ids: torch.Tensor, batch: Any, kv: Any) -> torch.Tensor:
            calls.append(len(input_ids))
            return model.compute_logits(model(input_ids, batch, kv))

        return step

    monkeypatch.setattr(llm_engine, "compile_decode", compile_slowly)
    engine = make_engine(ours, enforce_eager=False)
    engine.add_request("a", PROMPTS["a"], make_params(max_tokens=20))
    tokens = [t for _ in range(6) for out in engine.step() for t in out.output.token_ids]
    assert engine.stats().compiling and calls == []  # served eagerly meanwhile
    release.set()
    assert engine.wait_compiled(timeout=60) and not engine.stats().compiling
    tokens += run_to_completion(engine)["a"]
    assert calls and tokens == hf_greedy(hf, PROMPTS["a"], 20)
