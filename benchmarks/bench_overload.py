"""headrace offered far more than it can serve: does it answer everyone at once, and cleanly?

    python benchmarks/bench_overload.py [--factor 10] [--seconds 60] [--headrace-args "..."]

Starts `headrace serve` on the default model. First it measures the sustainable rate: --streams
closed-loop clients for --probe-seconds, completed requests per second. Then it offers --factor
times that rate for --seconds, arrivals spaced as a Poisson process, every request a fresh
prompt. Every reply must be a success or a clean refusal (429 or 503, with Retry-After); the
report gives the counts, the admitted requests' TTFT (queueing included), and /health once the
server has drained. Prints one markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from http_runs import random_words
from machine import metric_report
from servers import headrace_server
from timing import percentile

_T0 = time.perf_counter()


@dataclass
class Tally:
    # Replies by outcome: an HTTP status, or the name of a transport error.
    outcomes: Counter[str] = field(default_factory=Counter)
    # Refusals (429, 503) that came without a Retry-After header.
    refusals_without_retry_after: int = 0
    # Submit -> first content chunk of every admitted request, in ms.
    ttfts_ms: list[float] = field(default_factory=list)
    # Submit -> refusal of every refused request, in ms.
    refusal_ms: list[float] = field(default_factory=list)


def main() -> None:
    args = _parse_args()
    with headrace_server("headrace_overload", shlex.split(args.headrace_args)) as server:
        model = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
        rate = asyncio.run(_sustainable_rate(server.url, model, args))
        _log(f"sustainable: {rate:.2f} requests/s; offering {args.factor * rate:.2f}/s")
        tally = asyncio.run(_offer(server.url, model, args.factor * rate, args))
        idle = httpx.get(f"{server.url}/health").json()
    print(_report(args, rate, tally, idle))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=10.0, help="times the sustainable rate")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to offer it")
    parser.add_argument("--streams", type=int, default=16, help="clients of the probe")
    parser.add_argument("--probe-seconds", type=float, default=30.0)
    parser.add_argument("--prompt-words", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


async def _sustainable_rate(url: str, model: str, args: argparse.Namespace) -> float:
    """Requests per second that --streams clients, each waiting for its reply, complete."""
    tally = Tally()
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.probe_seconds
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:

        async def loop() -> None:
            while time.monotonic() < deadline:
                await _request(client, _body(rng, model, args), tally)

        await asyncio.gather(*(loop() for _ in range(args.streams)))
    return tally.outcomes["200"] / (time.monotonic() - started)


async def _offer(url: str, model: str, rate: float, args: argparse.Namespace) -> Tally:
    tally = Tally()
    rng = random.Random(args.seed + 1)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        requests = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            requests.append(asyncio.create_task(_request(client, _body(rng, model, args), tally)))
            await asyncio.sleep(rng.expovariate(rate))
        _log(f"offered {len(requests)} requests; waiting for the last replies")
        await asyncio.gather(*requests)
    return tally


def _body(rng: random.Random, model: str, args: argparse.Namespace) -> dict[str, object]:
    prompt = f"{rng.random()}: {random_words(rng, args.prompt_words)}. Continue."
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": args.max_tokens,
        "ignore_eos": True,
    }


async def _request(client: httpx.AsyncClient, body: dict[str, object], tally: Tally) -> None:
    sent = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            status = str(response.status_code)
            if response.status_code in (429, 503):
                tally.refusal_ms.append(1000 * (time.perf_counter() - sent))
                tally.refusals_without_retry_after += "retry-after" not in response.headers
            first = True
            async for line in response.aiter_lines():
                if line.startswith("data: {") and first and response.status_code == 200:
                    event = json.loads(line.removeprefix("data: "))
                    if "error" in event:
                        status = f"stream error {event['error'].get('type')}"
                    elif event["choices"] and event["choices"][0]["delta"].get("content"):
                        tally.ttfts_ms.append(1000 * (time.perf_counter() - sent))
                        first = False
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    tally.outcomes[status] += 1


def _report(args: argparse.Namespace, rate: float, tally: Tally, idle: dict[str, object]) -> str:
    total = sum(tally.outcomes.values())
    unclean = total - sum(tally.outcomes[s] for s in ("200", "429", "503"))

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.0f}" if values else "—"

    rows = [
        ("sustainable rate (probe), requests/s", f"{rate:.2f}"),
        (f"offered for {args.seconds:g} s, requests/s", f"{args.factor * rate:.2f}"),
        ("requests", f"{total} ({dict(sorted(tally.outcomes.items()))})"),
        ("neither success nor 429/503", str(unclean)),
        ("refusals without Retry-After", str(tally.refusals_without_retry_after)),
        (
            "refusal latency p50 / p99, ms",
            f"{ms(tally.refusal_ms, 50)} / {ms(tally.refusal_ms, 99)}",
        ),
        (
            "admitted TTFT p50 / p99 / max, ms",
            " / ".join(ms(tally.ttfts_ms, q) for q in (50, 99, 100)),
        ),
        ("/health once done", json.dumps(idle)),
    ]
    return metric_report(
        f"prompts of about {args.prompt_words} words, {args.max_tokens} tokens out (ignore_eos).",
        rows,
    )


def _log(message: str) -> None:
    print(f"[overload {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
