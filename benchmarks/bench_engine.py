"""headrace's engine against transformers' generate() on the same weights, in the same run.

    python benchmarks/bench_engine.py [--quick] [--dtype bfloat16] [--server http://HOST:PORT]

Both sides hold the identical dequantized weights of the default model (SmolLM2-135M-Instruct,
GGUF Q4_1) and decode greedily to a fixed length. Runs alternate between the two sides and each
metric is the median of --repeats runs, so the ratio survives a noisy machine. --server adds
the same workloads measured through a running server's streaming /v1/chat/completions.
Prints one markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
import transformers
from contention import PairRunner, Run
from local_runs import HeadraceRunner, TransformersRunner, build_transformers_model
from machine import cpu_model
from timing import aggregate_tok_s, decode_tok_s, steady_decode_tok_s, ttft_ms

from headrace.config import EngineConfig
from headrace.model.loader import load_model
from headrace.model.source import resolve_model

# Synthetic prompts draw ids from here up, past the special tokens at the start of the vocab.
_FIRST_PROMPT_ID = 100

_T0 = time.perf_counter()


@dataclass(frozen=True)
class Workload:
    # Tokens in every prompt.
    prompt_len: int
    # Tokens generated per stream.
    output_len: int
    # Streams in the concurrent case.
    concurrency: int
    # Measured runs per case; metrics are their medians.
    repeats: int


@dataclass
class Row:
    # What is measured, with its unit.
    metric: str
    # True for rates, False for latencies (which way the ratio points).
    higher_is_better: bool
    # One value per run, per side.
    headrace: list[float] = field(default_factory=list)
    transformers: list[float] = field(default_factory=list)
    # Whether run i of both sides ran back to back, so their ratio can be taken run by run.
    paired: bool = True

    def speedup(self) -> float | None:
        """How many times faster headrace is: the median of the per-run ratios when paired."""
        if not self.transformers:
            return None
        if self.paired:
            pairs = zip(self.headrace, self.transformers, strict=True)
            return statistics.median(self._speedup(ours, theirs) for ours, theirs in pairs)
        return self._speedup(statistics.median(self.headrace), statistics.median(self.transformers))

    def _speedup(self, ours: float, theirs: float) -> float:
        return ours / theirs if self.higher_is_better else theirs / ours


def main() -> None:
    args = _parse_args()
    workload = Workload(
        prompt_len=args.prompt_len or (64 if args.quick else 256),
        output_len=args.output_len or (32 if args.quick else 128),
        concurrency=args.concurrency,
        repeats=args.repeats,
    )
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    notes: list[str] = []
    rows: list[Row] = []
    if not args.http_only:
        rows += _bench_local(args, workload, dtype, device, notes)
    if args.server:
        rows += _bench_http(args.server, args.served_model, workload, rows, notes)
    print(_report(args, workload, rows, notes))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path (default: the default model)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="64-token prompts, 32 tokens out")
    parser.add_argument("--prompt-len", type=int, help="prompt tokens (default 256)")
    parser.add_argument("--output-len", type=int, help="tokens generated (default 128)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-num-batched-tokens", type=int, default=EngineConfig().max_num_batched_tokens
    )
    parser.add_argument("--max-model-len", type=int, help="default: the model's context length")
    parser.add_argument("--server", metavar="URL", help="also measure a running server")
    parser.add_argument("--served-model", help="model name for --server (default: the first)")
    parser.add_argument("--http-only", action="store_true", help="skip the in-process runs")
    parser.add_argument(
        "--noise-threshold",
        type=float,
        default=0.10,
        help="redo a run pair when other processes took more than this share of the CPU",
    )
    parser.add_argument("--noise-retries", type=int, default=2, help="most redos per run pair")
    return parser.parse_args()


def _bench_local(
    args: argparse.Namespace,
    workload: Workload,
    dtype: torch.dtype,
    device: torch.device,
    notes: list[str],
) -> list[Row]:
    transformers.logging.set_verbosity_error()
    source = resolve_model(args.model)
    _log(f"loading {source.path} as {args.dtype} on {device}")
    model = load_model(source.path, dtype, device)
    vocab_size = model.config.vocab_size
    engine_config = EngineConfig(
        max_num_seqs=max(EngineConfig().max_num_seqs, workload.concurrency),
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    max_model_len = args.max_model_len or model.config.max_position_embeddings
    ours = HeadraceRunner(
        model, engine_config, max_model_len=max_model_len, dtype=dtype, device=device
    )
    _log("building the transformers model from the same weights")
    theirs = TransformersRunner(build_transformers_model(model, dtype, device), device)
    notes.append(
        f"Model: {source.name} ({source.path.name}), weights dequantized to {args.dtype}; "
        f"headrace EngineConfig(max_num_seqs={engine_config.max_num_seqs}, "
        f"max_num_batched_tokens={engine_config.max_num_batched_tokens}), "
        f"max_model_len={max_model_len}; transformers {transformers.__version__} "
        f"LlamaForCausalLM, attn_implementation={theirs.model.config._attn_implementation}."
    )

    seed = iter(range(1_000_000))

    def prompts(count: int, length: int) -> list[list[int]]:
        # Fresh, distinct prompts every run: nothing can be served from a cache.
        rngs = [random.Random(next(seed)) for _ in range(count)]
        return [[r.randrange(_FIRST_PROMPT_ID, vocab_size) for _ in range(length)] for r in rngs]

    _log("warming up")
    for run in (ours.run, theirs.run):
        run(prompts(1, 32), 8)
        run(prompts(workload.concurrency, 32), 4)

    single, concurrent = _local_rows(workload)
    agree: list[int] = []
    noise = PairRunner(threshold=args.noise_threshold, retries=args.noise_retries, log=_log)
    for i in range(workload.repeats):
        _log(f"run {i + 1}/{workload.repeats}")
        sides: list[tuple[str, Run]] = [("headrace", ours.run), ("transformers", theirs.run)]
        if i % 2:
            sides.reverse()  # alternate who goes first, so drift hits both alike
        results = noise.run_pair(sides, prompts(1, workload.prompt_len), workload.output_len)
        for name, (stream,) in results.items():
            _record(single, name, [ttft_ms([stream]), decode_tok_s(stream)])
        agree.append(
            _common_prefix(results["headrace"][0].token_ids, results["transformers"][0].token_ids)
        )
        batch = prompts(workload.concurrency, workload.prompt_len)
        for name, streams in noise.run_pair(sides, batch, workload.output_len).items():
            assert all(s.num_tokens == workload.output_len for s in streams)
            _record(
                concurrent,
                name,
                [ttft_ms(streams), aggregate_tok_s(streams), steady_decode_tok_s(streams)],
            )
    notes.append(
        f"Other processes took at most {noise.worst_kept:.0%} of the machine's CPU during a kept "
        f"run; {noise.redone} run pair(s) were redone because they took more than "
        f"{noise.threshold:.0%}."
    )
    notes.append(
        "Greedy agreement, single stream: the two sides' outputs share their first "
        f"{', '.join(map(str, agree))} of {workload.output_len} tokens in the "
        f"{workload.repeats} runs."
    )
    return single + concurrent


def _local_rows(workload: Workload) -> tuple[list[Row], list[Row]]:
    n = workload.concurrency
    single = [
        Row("1 stream: TTFT (ms)", higher_is_better=False),
        Row("1 stream: decode (tok/s)", higher_is_better=True),
    ]
    concurrent = [
        Row(f"{n} streams: TTFT, median of {n} (ms)", higher_is_better=False),
        Row(f"{n} streams: output tok/s, submit to last token", higher_is_better=True),
        Row(f"{n} streams: decode tok/s once all are prefilled", higher_is_better=True),
    ]
    return single, concurrent


def _record(rows: list[Row], side: str, values: list[float]) -> None:
    measured = []
    for row, value in zip(rows, values, strict=True):
        getattr(row, side).append(value)
        measured.append(f"{row.metric} {value:.1f}")
    _log(f"  {side}: " + "; ".join(measured))


def _common_prefix(a: list[int], b: list[int]) -> int:
    differ = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return next(differ, min(len(a), len(b)))


def _bench_http(
    url: str, served_model: str | None, workload: Workload, local: list[Row], notes: list[str]
) -> list[Row]:
    from http_runs import HttpRunner, text_prompt

    client = HttpRunner(url, served_model)
    seed = iter(range(1_000_000))
    _log(f"warming up {url}")
    # Calibrate the words per prompt so the templated prompt lands near prompt_len tokens.
    words = max(8, workload.prompt_len - 40)
    probe = client.run([text_prompt(next(seed), words)], 8)[0]
    words = max(8, words + workload.prompt_len - probe.num_prompt_tokens)
    client.run([text_prompt(next(seed), words) for _ in range(workload.concurrency)], 4)

    transformers_side = {row.metric: row.transformers for row in local}
    n = workload.concurrency
    rows = [
        Row("HTTP, 1 stream: TTFT (ms)", higher_is_better=False),
        Row("HTTP, 1 stream: decode (tok/s)", higher_is_better=True),
        Row(f"HTTP, {n} streams: TTFT, median of {n} (ms)", higher_is_better=False),
        Row(f"HTTP, {n} streams: output tok/s, submit to last token", higher_is_better=True),
    ]
    prompt_tokens: set[int] = set()
    output_tokens: set[int] = set()
    for i in range(workload.repeats):
        _log(f"HTTP run {i + 1}/{workload.repeats}")
        stream = client.run([text_prompt(next(seed), words)], workload.output_len)[0]
        batch = [text_prompt(next(seed), words) for _ in range(n)]
        streams = client.run(batch, workload.output_len)
        for s in [stream, *streams]:
            prompt_tokens.add(s.num_prompt_tokens)
            output_tokens.add(s.num_tokens)
        single = [ttft_ms([stream]), decode_tok_s(stream)]
        _record(rows, "headrace", [*single, ttft_ms(streams), aggregate_tok_s(streams)])
    for row in rows:  # the transformers column: the same metric, in process
        row.transformers = transformers_side.get(row.metric.removeprefix("HTTP, "), [])
        row.paired = False
    notes.append(
        f"HTTP rows: {url} /v1/chat/completions, stream=True, temperature=0, "
        f"max_tokens={workload.output_len}, ignore_eos; prompts of "
        f"{min(prompt_tokens)}-{max(prompt_tokens)} tokens after the chat template, "
        f"{min(output_tokens)}-{max(output_tokens)} tokens out. Their transformers column "
        "repeats the in-process generate() number for the same metric."
    )
    return rows


def _report(args: argparse.Namespace, workload: Workload, rows: list[Row], notes: list[str]) -> str:
    command = shlex.join(["python", "benchmarks/bench_engine.py", *sys.argv[1:]])
    lines = [
        f"Command: `{command}`",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, device {args.device}, {args.dtype}",
        f"Workload: {workload.prompt_len}-token prompts, {workload.output_len} tokens out "
        f"(greedy, fixed length), {workload.concurrency} concurrent streams; "
        f"median of {workload.repeats} runs after one warm-up; the two sides alternate, and the "
        "ratio is the median of the per-run ratios.",
        "",
        "| metric | headrace | transformers | ratio (>1: headrace faster) |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ours = statistics.median(row.headrace)
        theirs = f"{statistics.median(row.transformers):.1f}" if row.transformers else "—"
        speedup = row.speedup()
        ratio = "—" if speedup is None else f"{speedup:.2f}x"
        lines.append(f"| {row.metric} | {ours:.1f} | {theirs} | {ratio} |")
    lines += ["", *notes]
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
