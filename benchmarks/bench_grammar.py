"""What constrained decoding costs: grammar compile times, and decode speed with and without one.

    python benchmarks/bench_grammar.py [--quick] [--device cpu] [--concurrency 1 8]

On the default model (SmolLM2-135M-Instruct, GGUF Q4_1), greedy, the same chat prompt both
ways and exactly --max-tokens tokens per stream: unconstrained runs ignore EOS, constrained
ones follow a JSON schema (an array of at least 1000 strings) that cannot end sooner. Runs
alternate between the two and each figure is the median of --repeats runs. "mask" is the time
the engine spends filling and applying grammar masks, per step. Prints one markdown table on
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timing import StreamTiming, decode_tok_s

from headrace.config import EngineConfig
from headrace.engine.llm_engine import LLMEngine
from headrace.engine.outputs import SamplingParams
from headrace.model.loader import load_model
from headrace.model.source import resolve_model
from headrace.text import TOOL_CALL_FORMATS, FunctionSpec, Tokenizer
from headrace.text.grammar import GrammarCompiler

# The streaming guide's get_weather parameters.
WEATHER = {
    "type": "object",
    "properties": {"location": {"type": "string", "description": "City name"}},
    "required": ["location"],
}
WEATHER_TOOL = FunctionSpec("get_weather", WEATHER)
# Cannot be complete before any --max-tokens this script is run with.
LONG_LIST = {"type": "array", "items": {"type": "string"}, "minItems": 1000}
PROMPT = "List as many fruits as you can, as a JSON array of strings."


@dataclass(frozen=True)
class Decode:
    # Median over the streams of each stream's decode rate, tokens/s.
    tok_s: float
    # Engine time spent on grammar masks per step, microseconds.
    mask_us: float


def main() -> None:
    args = _parse_args()
    device = torch.device(args.device)
    path = Path(args.model) if args.model else resolve_model(None).path
    tokenizer = Tokenizer.from_path(path)
    model = load_model(path, torch.float32, device)
    rows = _compile_rows(tokenizer, args.repeats)
    rows += _decode_rows(args, model, tokenizer, device)
    print(_report(args, path, device, rows))


def _compile_rows(tokenizer: Tokenizer, repeats: int) -> list[tuple[str, str]]:
    _log("compile times")
    started = time.perf_counter()
    GrammarCompiler(tokenizer)
    setup_ms = 1000 * (time.perf_counter() - started)
    compilers = [GrammarCompiler(tokenizer) for _ in range(repeats)]
    weather = _median_ms(lambda c: c.json_schema(WEATHER, strict=True), compilers)
    cached = _median_ms(lambda c: c.json_schema(WEATHER, strict=True), compilers * 20)
    json_object = _median_ms(lambda c: c.json_object(), compilers)
    hermes = TOOL_CALL_FORMATS["hermes"]
    tool = _median_ms(
        lambda c: c.tool_calls([WEATHER_TOOL], most_calls=1, format=hermes), compilers
    )
    return [
        ("compiler setup (once per server: tokenizer -> llguidance)", f"{setup_ms:.0f} ms"),
        ("compile get_weather schema, cold", f"{weather:.2f} ms"),
        ("compile get_weather schema, cached", f"{1000 * cached:.1f} µs"),
        ("compile json_object, cold", f"{json_object:.2f} ms"),
        ("compile get_weather tool_calls grammar, cold", f"{tool:.2f} ms"),
    ]


def _median_ms(compile_one: Callable[[GrammarCompiler], Any], compilers: list[Any]) -> float:
    times = []
    for compiler in compilers:
        started = time.perf_counter()
        compile_one(compiler)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _decode_rows(
    args: argparse.Namespace, model: Any, tokenizer: Tokenizer, device: torch.device
) -> list[tuple[str, str]]:
    grammar = GrammarCompiler(tokenizer).json_schema(LONG_LIST, strict=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}])
    free = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    constrained = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=0.0,
        stop_token_ids=tokenizer.eos_token_ids,
        grammar=grammar,
    )
    rows = []
    for concurrency in args.concurrency:
        config = EngineConfig(max_num_seqs=max(concurrency, 1), max_num_batched_tokens=4096)
        engine = LLMEngine(model, config, max_model_len=1024, kv_dtype=torch.float32, device=device)
        _decode(engine, [prompt] * concurrency, free, args.max_tokens)  # warm-up
        runs: dict[str, list[Decode]] = {"free": [], "grammar": []}
        for repeat in range(args.repeats):
            _log(f"decode, {concurrency} stream(s), run {repeat + 1}/{args.repeats}")
            for name, params in (("free", free), ("grammar", constrained)):
                runs[name].append(_decode(engine, [prompt] * concurrency, params, args.max_tokens))
        free_tok_s = statistics.median(d.tok_s for d in runs["free"])
        tok_s = statistics.median(d.tok_s for d in runs["grammar"])
        mask_us = statistics.median(d.mask_us for d in runs["grammar"])
        step_ms = 1000 / tok_s - 1000 / free_tok_s
        label = f"{concurrency} stream{'s' if concurrency > 1 else ''}"
        rows += [
            (f"decode tok/s per stream, {label}, no grammar", f"{free_tok_s:.1f}"),
            (f"decode tok/s per stream, {label}, JSON schema", f"{tok_s:.1f}"),
            (f"grammar cost per step, {label} (step time difference)", f"{step_ms:+.2f} ms"),
            (f"mask fill + apply per step, {label}", f"{mask_us:.0f} µs"),
        ]
    return rows


def _decode(
    engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, max_tokens: int
) -> Decode:
    bitmask = engine.runner.grammar_bitmask
    apply = bitmask.apply
    mask_seconds = 0.0

    def timed_apply(logits: torch.Tensor, requests: list[Any]) -> None:
        nonlocal mask_seconds
        started = time.perf_counter()
        apply(logits, requests)
        mask_seconds += time.perf_counter() - started

    bitmask.apply = timed_apply  # type: ignore[method-assign]
    try:
        streams = _run(engine, prompts, params)
    finally:
        del bitmask.apply
    assert all(s.num_tokens == max_tokens for s in streams), "a stream ended early"
    return Decode(
        tok_s=statistics.median(decode_tok_s(s) for s in streams),
        mask_us=1e6 * mask_seconds / max_tokens,
    )


@torch.inference_mode()
def _run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> list[StreamTiming]:
    streams: dict[str, StreamTiming] = {}
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        streams[f"s{i}"] = StreamTiming(start=start, num_prompt_tokens=len(prompt))
        engine.add_request(f"s{i}", prompt, params)
    while engine.has_work:
        outputs = engine.step()
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        for out in outputs:
            if out.error is not None:
                raise RuntimeError(f"request {out.request_id} failed: {out.error}")
            stream = streams[out.request_id]
            stream.num_tokens += len(out.output.token_ids)
            stream.token_times += [now] * len(out.output.token_ids)
    return list(streams.values())


def _report(
    args: argparse.Namespace, path: Path, device: torch.device, rows: list[tuple[str, str]]
) -> str:
    command = shlex.join(["python", "benchmarks/bench_grammar.py", *sys.argv[1:]])
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    lines = [
        f"`{command}`",
        "",
        f"{datetime.date.today()}, {hardware}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), model {path.name}, float32, greedy, "
        f"{args.max_tokens} tokens per stream, median of {args.repeats} runs.",
        "",
        "| measurement | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 tokens, 2 runs")
    parser.add_argument("--model", help="a .gguf file or model directory (default: the default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.max_tokens, args.repeats = 32, 2
    return args


def _log(message: str) -> None:
    print(f"[bench_grammar] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
