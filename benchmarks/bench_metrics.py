"""What the metrics cost: the tally's timing per engine output, and /metrics under load.

    python benchmarks/bench_metrics.py [--steps 200000] [--rounds 5] [--streams 32]
        [--max-tokens 128] [--no-server]

"tally": a request's tally takes each engine output (`RequestTally.add`, which reads the clock
and keeps the inter-token interval), against the usage counting alone it had before the metrics
(the same dictionaries, no clock), over --steps outputs of one sequence, median of --rounds
rounds; then `Metrics.observe` for a request of that many outputs (its intervals observed one by
one), per output. "scrape": `headrace serve` on the default model, --streams streams of
--max-tokens tokens each, GET /metrics timed every 100 ms while they run (and idle first).
Prints markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import httpx
from machine import cpu_model
from servers import HealthPoller, headrace_server
from timing import percentile

from headrace.engine.outputs import SamplingParams, TokenOutput
from headrace.metrics import Metrics
from headrace.serving.generation import Generation, Step
from headrace.serving.tally import RequestTally

_MODEL = "SmolLM2-135M-Instruct"


class _UsageOnly:
    """The tally as it was before the metrics: token counts by sequence, no clock."""

    def __init__(self, generation: Generation) -> None:
        self._n = generation.n
        self._generated: dict[int, int] = {}
        self._cached: dict[int, int] = {}

    def add(self, step: Step) -> None:
        self._generated[step.index] = step.output.num_generated_tokens
        if step.index % self._n == 0:
            self._cached[step.index] = step.output.num_cached_tokens


class _FakeEngine:
    """What Metrics reads at a scrape; never scraped here."""

    max_model_len = 2048


def _steps(count: int) -> list[Step]:
    return [
        Step(0, "x", TokenOutput([7], None, 16, i + 1, 0, queued_s=0.001), None)
        for i in range(count)
    ]


def _per_step_us(tally: RequestTally | _UsageOnly, steps: list[Step]) -> float:
    add = tally.add
    started = time.perf_counter()
    for step in steps:
        add(step)
    return (time.perf_counter() - started) / len(steps) * 1e6


def bench_tally(steps_count: int, rounds: int) -> None:
    generation = Generation("r", ([1] * 16,), 1, SamplingParams(max_tokens=steps_count), (), False)
    steps = _steps(steps_count)
    before, after, observe = [], [], []
    for _ in range(rounds):
        before.append(_per_step_us(_UsageOnly(generation), steps))
        tally = RequestTally(generation, _MODEL, "chat")
        after.append(_per_step_us(tally, steps))
        record = tally.record("stop")
        metrics = Metrics(_MODEL, _FakeEngine())  # type: ignore[arg-type]
        started = time.perf_counter()
        metrics.observe(record)
        observe.append((time.perf_counter() - started) / steps_count * 1e6)
    usage, timed = statistics.median(before), statistics.median(after)
    print(f"\n{cpu_model()}; {steps_count} outputs, median of {rounds} rounds\n")
    print("| per engine output | µs |")
    print("|---|---|")
    print(f"| usage counting alone (before) | {usage:.3f} |")
    print(f"| RequestTally.add (counting + timing) | {timed:.3f} |")
    print(f"| timing's share | {timed - usage:.3f} |")
    print(f"| Metrics.observe, per output of the request | {statistics.median(observe):.3f} |")


async def _streams(url: str, count: int, max_tokens: int) -> int:
    body = {
        "model": _MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one(index: int) -> int:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                return sum([1 async for _ in response.aiter_lines()])

        return sum(await asyncio.gather(*(one(i) for i in range(count))))


def _row(label: str, latencies: list[float]) -> str:
    return (
        f"| {label} | {len(latencies)} | {percentile(latencies, 50):.1f} | "
        f"{percentile(latencies, 99):.1f} | {max(latencies):.1f} |"
    )


def bench_scrape(streams: int, max_tokens: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="bench-metrics-")
    flags = ["--max-model-len", "1024", "--data-dir", data_dir]
    with headrace_server("bench-metrics", flags) as server:
        with HealthPoller(server.url, 0.1, path="/metrics") as idle:
            time.sleep(2)
        with HealthPoller(server.url, 0.1, path="/metrics") as busy:
            asyncio.run(_streams(server.url, streams, max_tokens))
    print(f"\n/metrics round trip, ms ({streams} streams of {max_tokens} tokens)\n")
    print("| server | scrapes | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(_row("idle", idle.latencies_ms))
    print(_row(f"{streams} streams", busy.latencies_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-server", action="store_true", help="the tally figures only")
    args = parser.parse_args()
    bench_tally(args.steps, args.rounds)
    if not args.no_server:
        bench_scrape(args.streams, args.max_tokens)


if __name__ == "__main__":
    main()
