"""Constrained decoding on the real default model (SmolLM2-135M-Instruct), greedy and sampled.

All the requests run once, as one batch, in a module fixture; the tests check what came out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from headrace.config import EngineConfig
from headrace.engine.llm_engine import LLMEngine
from headrace.engine.outputs import SamplingParams
from headrace.model.loader import load_model
from headrace.text import TOOL_CALL_FORMATS, FunctionSpec, Tokenizer
from headrace.text.grammar import CompiledGrammar, GrammarCompiler

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"],
        },
    },
}
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
CAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "indoor": {"type": "boolean"},
    },
    "required": ["name", "age", "indoor"],
}
# Greedy, then temperature 1 with a few seeds.
SAMPLINGS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    **{f"seed{seed}": {"temperature": 1.0, "seed": seed} for seed in (1, 2)},
}
CPU = torch.device("cpu")
HERMES = TOOL_CALL_FORMATS["hermes"]
MAX_TOKENS = 64
TOOL_CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


def spec(tool: dict[str, Any]) -> FunctionSpec:
    """An OpenAI tool as the grammar takes it."""
    return FunctionSpec(tool["function"]["name"], tool["function"]["parameters"])


@dataclass(frozen=True)
class Result:
    # What was asked for.
    kind: str
    # The generated text.
    text: str
    # Why it ended.
    finish_reason: str | None


@pytest.fixture(scope="module")
def results(default_model_path: Path) -> dict[str, Result]:
    tokenizer = Tokenizer.from_path(default_model_path)
    compiler = GrammarCompiler(tokenizer)
    # The file's weights dequantized: the float32 reference whose outputs these tests were read
    # from (the quantized kernels round differently, and greedy texts drift).
    model = load_model(default_model_path, torch.float32, CPU, quantization="none")
    config = EngineConfig(max_num_seqs=24, max_num_batched_tokens=4096, enforce_eager=True)
    engine = LLMEngine(model, config, max_model_len=768, kv_dtype=torch.float32, device=CPU)

    def prompt(text: str, tools: list[dict[str, Any]] | None = None) -> list[int]:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tools=tools)

    both = [WEATHER_TOOL, ADD_TOOL]
    asks: dict[str, tuple[list[int], CompiledGrammar | None]] = {
        "object": (
            prompt("Give me a JSON object for a cat with only two fields: name and colour."),
            compiler.json_object(),
        ),
        "schema": (prompt("Describe a cat in JSON."), compiler.json_schema(CAT, strict=True)),
        "weather": (
            prompt("What is the weather in Paris?", [WEATHER_TOOL]),
            compiler.tool_calls([spec(WEATHER_TOOL)], most_calls=1, format=HERMES),
        ),
        "two tools": (
            prompt("What is 2 plus 3?", both),
            compiler.tool_calls([spec(tool) for tool in both], most_calls=1, format=HERMES),
        ),
        "two tools parallel": (
            prompt("Call add with 2 and 3.", both),
            compiler.tool_calls([spec(tool) for tool in both], most_calls=2, format=HERMES),
        ),
    }
    free_prompt = prompt("Name three colours.")

    def params(sampling: dict[str, Any], grammar: CompiledGrammar | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=MAX_TOKENS,
            stop_token_ids=tokenizer.eos_token_ids,
            grammar=grammar,
            **sampling,
        )

    for kind, (prompt_ids, grammar) in asks.items():
        # Parallel calls run on to max_tokens; one greedy run of those is enough.
        samplings = ["greedy"] if kind == "two tools parallel" else list(SAMPLINGS)
        for name in samplings:
            engine.add_request(f"{kind}/{name}", prompt_ids, params(SAMPLINGS[name], grammar))
    engine.add_request("free/batched", free_prompt, params(SAMPLINGS["greedy"], None))
    batched = _run(engine, tokenizer)
    engine.add_request("free/alone", free_prompt, params(SAMPLINGS["greedy"], None))
    return batched | _run(engine, tokenizer)


def _run(engine: LLMEngine, tokenizer: Tokenizer) -> dict[str, Result]:
    tokens: dict[str, list[int]] = {}
    finished: dict[str, str | None] = {}
    while engine.has_work:
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.output.token_ids)
            finished[out.request_id] = out.output.finish_reason
    return {
        request_id: Result(request_id.split("/")[0], tokenizer.decode(ids), finished[request_id])
        for request_id, ids in tokens.items()
    }


def of_kind(results: dict[str, Result], kind: str) -> list[Result]:
    found = [result for result in results.values() if result.kind == kind]
    assert found
    return found


def test_json_object_gives_a_dict(results: dict[str, Result]) -> None:
    for result in of_kind(results, "object"):
        assert result.finish_reason == "stop", result.text
        assert isinstance(json.loads(result.text), dict)


def test_json_schema_output_validates(results: dict[str, Result]) -> None:
    for result in of_kind(results, "schema"):
        assert result.finish_reason == "stop", result.text
        jsonschema.validate(json.loads(result.text), CAT)


def check_tool_calls(result: Result, tools: list[dict[str, Any]], *, parallel: bool) -> None:
    assert result.finish_reason == "stop", result.text
    calls = TOOL_CALL.findall(result.text)
    assert calls and (parallel or len(calls) == 1), result.text
    assert TOOL_CALL.sub("", result.text).strip() == "", result.text
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    for call in calls:
        parsed = json.loads(call)
        assert set(parsed) == {"name", "arguments"}
        assert parsed["name"] in schemas
        jsonschema.validate(parsed["arguments"], schemas[parsed["name"]])


def test_forced_weather_call_is_valid(results: dict[str, Result]) -> None:
    for result in of_kind(results, "weather"):
        check_tool_calls(result, [WEATHER_TOOL], parallel=False)


def test_one_of_two_tools_is_called_validly(results: dict[str, Result]) -> None:
    for result in of_kind(results, "two tools"):
        check_tool_calls(result, [WEATHER_TOOL, ADD_TOOL], parallel=False)


def test_parallel_calls_are_each_valid(results: dict[str, Result]) -> None:
    for result in of_kind(results, "two tools parallel"):
        text = result.text
        if result.finish_reason == "length":  # more calls than fit: check the complete ones
            assert "</tool_call>" in text, text
            text = text[: text.rindex("</tool_call>") + len("</tool_call>")]
        check_tool_calls(Result(result.kind, text, "stop"), [WEATHER_TOOL, ADD_TOOL], parallel=True)


def test_unconstrained_request_is_unchanged_by_constrained_neighbours(
    results: dict[str, Result],
) -> None:
    assert results["free/batched"] == results["free/alone"]
