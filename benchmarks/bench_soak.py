"""headrace under a steady load for minutes: does its memory stay flat, and does it fail anyone?

    python benchmarks/bench_soak.py [--minutes 10] [--streams 16] [--disconnect 0.2]

Starts `headrace serve` on the default model and keeps --streams streaming requests in flight
until the time is up, each with a fresh prompt and a random output length. A --disconnect share
of them is cut by the client after a random number of chunks, as a user closing a tab would.
The server's resident memory (RSS) is sampled every few seconds. At the end the server must be
idle: nothing running or waiting, no KV-cache block held. Prints one markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from http_runs import random_words
from machine import metric_report
from servers import headrace_server

# Seconds between two samples of the server's RSS.
_RSS_INTERVAL_S = 5.0
# Samples before this many seconds are warm-up: allocators and caches fill then.
_WARMUP_S = 60.0


@dataclass
class Tally:
    # Requests by outcome: an HTTP status, "cut" (disconnected on purpose) or an error's name.
    outcomes: Counter[str] = field(default_factory=Counter)
    # Completion tokens received.
    tokens: int = 0
    # (seconds since start, RSS in MiB).
    rss: list[tuple[float, float]] = field(default_factory=list)


def main() -> None:
    args = _parse_args()
    flags = ["--max-num-seqs", str(args.streams), "--dtype", args.dtype]
    with headrace_server("headrace_soak", [*flags, *shlex.split(args.headrace_args)]) as server:
        tally = asyncio.run(_soak(server.url, server.pid, args))
        idle = httpx.get(f"{server.url}/health").json()
    print(_report(args, tally, idle))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--disconnect", type=float, default=0.2, help="share of requests cut")
    parser.add_argument("--prompt-words", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=128, help="most tokens per request")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


async def _soak(url: str, pid: int, args: argparse.Namespace) -> Tally:
    tally = Tally()
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        workers = [
            _worker(client, model, deadline, random.Random(rng.random()), args, tally)
            for _ in range(args.streams)
        ]
        await asyncio.gather(_sample_rss(pid, start, deadline, tally), *workers)
    return tally


async def _worker(
    client: httpx.AsyncClient,
    model: str,
    deadline: float,
    rng: random.Random,
    args: argparse.Namespace,
    tally: Tally,
) -> None:
    while time.monotonic() < deadline:
        prompt = f"{rng.random()}: {random_words(rng, args.prompt_words)}. Continue."
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": rng.randint(1, args.max_tokens),
            "stream_options": {"include_usage": True},
        }
        cut_after = rng.randint(0, args.max_tokens) if rng.random() < args.disconnect else None
        try:
            tally.outcomes[await _stream(client, body, cut_after, tally)] += 1
        except httpx.HTTPError as exc:
            tally.outcomes[type(exc).__name__] += 1


async def _stream(
    client: httpx.AsyncClient, body: dict[str, object], cut_after: int | None, tally: Tally
) -> str:
    """Send one request; its outcome. Leaving the block early closes the connection."""
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return str(response.status_code)
        chunks = 0
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                return f"stream error {event['error'].get('type')}"
            if event.get("usage"):
                tally.tokens += event["usage"]["completion_tokens"]
            chunks += 1
            if cut_after is not None and chunks > cut_after:
                return "cut"
        return "200"


async def _sample_rss(pid: int, start: float, deadline: float, tally: Tally) -> None:
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                tally.rss.append((time.monotonic() - start, int(line.split()[1]) / 1024))
        await asyncio.sleep(_RSS_INTERVAL_S)


def _report(args: argparse.Namespace, tally: Tally, idle: dict[str, object]) -> str:
    steady = [(t, rss) for t, rss in tally.rss if t >= _WARMUP_S] or tally.rss
    times, values = zip(*steady, strict=True)
    slope = statistics.linear_regression(times, values).slope * 60 if len(steady) > 1 else 0.0
    failures = sum(n for outcome, n in tally.outcomes.items() if outcome not in ("200", "cut"))
    rows = [
        ("requests", f"{sum(tally.outcomes.values())} ({dict(sorted(tally.outcomes.items()))})"),
        ("failed (5xx, 4xx, stream errors, transport errors)", str(failures)),
        ("completion tokens received", str(tally.tokens)),
        (f"RSS after {_WARMUP_S:.0f} s warm-up, MiB", f"{values[0]:.0f}"),
        ("RSS at the end, MiB", f"{values[-1]:.0f}"),
        ("RSS min / max after warm-up, MiB", f"{min(values):.0f} / {max(values):.0f}"),
        ("RSS trend after warm-up, MiB per minute", f"{slope:+.2f}"),
        ("/health once done", json.dumps(idle)),
    ]
    return metric_report(
        f"{args.minutes:g} min, {args.streams} streams, {args.disconnect:.0%} cut by the client.",
        rows,
    )


if __name__ == "__main__":
    main()
