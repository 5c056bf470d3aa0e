"""Issue 13's Batch API targets: a chat user's TTFT while a batch runs, and the batch's throughput.

    python benchmarks/bench_batch.py [--max-num-seqs 16] [--requests 400] [--max-tokens 128]
                                     [--interactive 20] [--interactive-tokens 16] [--pause 0.5]
                                     [--online-requests N] [--headrace-args "..."]

Starts one `headrace serve` on the default model with --max-num-seqs and a fresh temporary
--data-dir, warms it up (--max-num-seqs chats at once, a 2-line batch), then, in this order:

1. idle: --interactive streamed chats (a short prompt, --interactive-tokens tokens out), one at
   a time, --pause seconds apart, nothing else running; TTFT of each.
2. engine best: --online-requests (default: --requests) non-streamed chats shaped like the batch's
   lines, exactly --max-num-seqs in flight until the last is sent; completion tokens over the
   wall time.
3. batch alone: a file of --requests chat lines (a short distinct prompt, --max-tokens tokens out,
   ignore_eos) uploaded and run as a batch, polled every 0.2 s; completion tokens of the output
   file over the client's time from POST /v1/batches to the poll that sees it completed.
4. batch with interactive: the same again, and once it is in_progress with batch requests
   running (/health batch_running), the interactive chats of step 1, until all are sent or the
   batch leaves in_progress.

Each step has fresh prompts of the same shape, so the prefix cache gives none a head start.
Targets: (1) interactive TTFT p50 during the batch at most 1.5x the idle p50; (2) the batch
alone at least 0.9x engine best. Prints one markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from http_runs import HttpRunner, text_prompt
from machine import metric_report
from openai import OpenAI
from openai.types import Batch
from servers import headrace_server
from timing import percentile, ttfts_ms

_T0 = time.perf_counter()
# Seconds between looks at a batch, and at /health while waiting for its requests to run.
_POLL_S = 0.2
# Words of each prompt (about one token each), batch lines and interactive chats alike.
_PROMPT_WORDS = 16
_ENDED = ("completed", "failed", "expired", "cancelled")
_TTFT_TARGET = 1.5
_THROUGHPUT_TARGET = 0.9


@dataclass
class BatchRun:
    # The batch object as the poll that saw it end returned it.
    batch: Batch
    # Seconds from POST /v1/batches to the poll that saw it end.
    wall_s: float
    # Seconds from POST /v1/batches to the first poll that saw it in_progress; None: none did.
    to_in_progress_s: float | None
    # Completion tokens over every line of its output file.
    completion_tokens: int
    # Output lines without status 200, plus lines in its error file.
    failed_lines: int
    # Lines with fewer completion tokens than asked for (ignore_eos not honoured).
    short_lines: int
    # Requests the engine preempted (/health) from its creation to its end.
    preemptions: int


@dataclass
class Online:
    # Completion tokens over every reply.
    completion_tokens: int
    # Seconds from the first request sent to the last reply.
    wall_s: float
    # Replies with fewer completion tokens than asked for.
    short_replies: int


class BatchWatch:
    """Polls a batch every _POLL_S from a background thread until it ends, noting when each
    status was first seen."""

    def __init__(self, client: OpenAI, batch: Batch, created: float, server_url: str) -> None:
        self.client = client
        # The batch as the latest poll returned it.
        self.batch = batch
        # perf_counter() just before POST /v1/batches.
        self.created = created
        self.health_url = f"{server_url}/health"
        # /health's preemptions count when the watch began.
        self.preemptions: int = self.health()["preemptions"]
        # perf_counter() of the first poll that saw each status.
        self.seen: dict[str, float] = {}
        # What ended the polls early.
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._poll, name="batch-watch", daemon=True)
        self._thread.start()

    @property
    def watching(self) -> bool:
        """Whether the polls go on: the batch has not ended, nor has a poll failed."""
        return self._thread.is_alive()

    def running(self) -> bool:
        """Whether the last poll saw it in_progress and /health now shows batch requests
        running."""
        in_progress = self.watching and self.batch.status == "in_progress"
        return in_progress and self.health()["batch_running"] > 0

    def health(self) -> dict[str, Any]:
        """The server's /health now."""
        health: dict[str, Any] = httpx.get(self.health_url).json()
        return health

    def _poll(self) -> None:
        try:
            while self.batch.status not in _ENDED:
                time.sleep(_POLL_S)
                self.batch = self.client.batches.retrieve(self.batch.id)
                self.seen.setdefault(self.batch.status, time.perf_counter())
        except Exception as error:
            self.error = error

    def wait(self) -> Batch:
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.batch


def main() -> None:
    args = _parse_args()
    load_before = os.getloadavg()[0]
    api_key = os.environ.get("OPENAI_API_KEY", "headrace-bench")
    with tempfile.TemporaryDirectory(prefix="headrace-bench-batch-") as data_dir:
        flags = ["--max-num-seqs", str(args.max_num_seqs), "--data-dir", data_dir]
        with headrace_server(
            "headrace_batch", [*flags, *shlex.split(args.headrace_args)]
        ) as server:
            client = OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)
            model = client.models.list().data[0].id
            chats = HttpRunner(server.url, model)
            _log("warming up")
            warm_up = [text_prompt(-1 - i, _PROMPT_WORDS) for i in range(args.max_num_seqs)]
            chats.run(warm_up, 8)
            _finish_batch(_start_batch(client, server.url, _lines(model, 2, 8, 900_000)), 8)
            _log(f"idle: {args.interactive} interactive chats")
            idle = _interactive(chats, args, 100_000)
            _log(f"engine best: {args.online_requests or args.requests} online chats")
            best = asyncio.run(_engine_best(server.url, api_key, model, args))
            _log(f"batch alone: {args.requests} lines")
            lines = _lines(model, args.requests, args.max_tokens, 0)
            alone = _finish_batch(_start_batch(client, server.url, lines), args.max_tokens)
            _log("batch with interactive chats")
            lines = _lines(model, args.requests, args.max_tokens, 400_000)
            watch = _start_batch(client, server.url, lines)
            loaded = _interactive(chats, args, 200_000, watch)
            during = _finish_batch(watch, args.max_tokens)
    print(_report(args, idle, loaded, best, alone, during, (load_before, os.getloadavg()[0])))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="lines of each batch")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens out per batch line")
    parser.add_argument("--interactive", type=int, default=20, help="interactive chats")
    parser.add_argument("--interactive-tokens", type=int, default=16)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between chats")
    parser.add_argument(
        "--online-requests", type=int, help="requests of engine best (default: --requests)"
    )
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    return parser.parse_args()


def _body(model: str, index: int, max_tokens: int) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text_prompt(index, _PROMPT_WORDS)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


def _lines(model: str, count: int, max_tokens: int, first: int) -> bytes:
    """A batch input file: `count` chat lines, prompts `first`, `first` + 1, ..."""
    lines = (
        json.dumps(
            {
                "custom_id": f"request-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": _body(model, first + i, max_tokens),
            }
        )
        for i in range(count)
    )
    return "\n".join(lines).encode() + b"\n"


def _interactive(
    chats: HttpRunner, args: argparse.Namespace, first: int, during: BatchWatch | None = None
) -> list[float]:
    """TTFTs (ms) of the interactive chats, one at a time; `during`: only while that batch is
    in_progress, starting once its requests run."""
    ttfts: list[float] = []
    while during is not None and during.watching and not during.running():
        time.sleep(_POLL_S)
    for i in range(args.interactive):
        if during is not None and not (during.watching and during.batch.status == "in_progress"):
            break
        prompt = text_prompt(first + i, _PROMPT_WORDS)
        ttfts += ttfts_ms(chats.run([prompt], args.interactive_tokens))
        time.sleep(args.pause)
    return ttfts


async def _engine_best(url: str, api_key: str, model: str, args: argparse.Namespace) -> Online:
    """Non-streamed chats shaped like the batch's lines, --max-num-seqs in flight at all times."""
    count = args.online_requests or args.requests
    bodies = (_body(model, 300_000 + i, args.max_tokens) for i in range(count))
    tokens: list[int] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as client:

        async def worker() -> None:
            for body in bodies:
                response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                tokens.append(response.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.max_num_seqs)))
        wall_s = time.perf_counter() - started
    short = sum(count < args.max_tokens for count in tokens)
    return Online(completion_tokens=sum(tokens), wall_s=wall_s, short_replies=short)


def _start_batch(client: OpenAI, server_url: str, lines: bytes) -> BatchWatch:
    """Uploads the lines, creates their batch and starts watching it."""
    file = client.files.create(file=("batch.jsonl", io.BytesIO(lines)), purpose="batch")
    created = time.perf_counter()
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return BatchWatch(client, batch, created, server_url)


def _finish_batch(watch: BatchWatch, max_tokens: int) -> BatchRun:
    """Waits for the watched batch to end and reads its output and error files."""
    batch = watch.wait()
    client = watch.client
    preemptions = watch.health()["preemptions"] - watch.preemptions
    wall_s = watch.seen[batch.status] - watch.created
    if batch.status != "completed":
        raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.errors}")
    in_progress = watch.seen.get("in_progress")
    tokens = failed = short = 0
    if batch.output_file_id:
        for line in client.files.content(batch.output_file_id).text.splitlines():
            response = json.loads(line)["response"]
            if response["status_code"] != 200:
                failed += 1
                continue
            count = response["body"]["usage"]["completion_tokens"]
            tokens += count
            short += count < max_tokens
    if batch.error_file_id:
        failed += len(client.files.content(batch.error_file_id).text.splitlines())
    return BatchRun(
        batch=batch,
        wall_s=wall_s,
        to_in_progress_s=None if in_progress is None else in_progress - watch.created,
        completion_tokens=tokens,
        failed_lines=failed,
        short_lines=short,
        preemptions=preemptions,
    )


def _report(
    args: argparse.Namespace,
    idle: list[float],
    loaded: list[float],
    best: Online,
    alone: BatchRun,
    during: BatchRun,
    load: tuple[float, float],
) -> str:
    def ttft(values: list[float]) -> str:
        if not values:
            return "none measured"
        quantiles = " / ".join(f"{percentile(values, q):.0f}" for q in (50, 90, 100))
        return f"{quantiles} ({len(values)} of {args.interactive})"

    def batch_row(run: BatchRun) -> str:
        batch = run.batch
        server_s = (batch.completed_at or 0) - (batch.in_progress_at or 0)
        to_run = "—" if run.to_in_progress_s is None else f"{run.to_in_progress_s:.1f}"
        return (
            f"{run.completion_tokens / run.wall_s:.1f} ({run.completion_tokens} tokens in "
            f"{run.wall_s:.1f} s; create -> in_progress {to_run} s; in_progress_at -> "
            f"completed_at {server_s} s; {run.failed_lines} failed, {run.short_lines} short; "
            f"{run.preemptions} preemptions)"
        )

    if loaded:
        ttft_ratio = percentile(loaded, 50) / percentile(idle, 50)
        ttft_verdict = f"{ttft_ratio:.2f}: {_met(ttft_ratio <= _TTFT_TARGET)}"
    else:
        ttft_verdict = "not measured: the batch left in_progress before the first chat"
    best_tok_s = best.completion_tokens / best.wall_s
    throughput_ratio = alone.completion_tokens / alone.wall_s / best_tok_s
    rows = [
        ("interactive TTFT idle, p50 / p90 / max ms", ttft(idle)),
        ("interactive TTFT during the batch, p50 / p90 / max ms", ttft(loaded)),
        (
            f"target 1: TTFT p50 during / idle <= {_TTFT_TARGET}",
            ttft_verdict,
        ),
        (
            f"engine best: online, {args.max_num_seqs} in flight, output tok/s",
            f"{best_tok_s:.1f} ({best.completion_tokens} tokens in {best.wall_s:.1f} s; "
            f"{best.short_replies} short)",
        ),
        ("batch alone, output tok/s (create -> seen completed)", batch_row(alone)),
        (
            f"target 2: batch alone / engine best >= {_THROUGHPUT_TARGET}",
            f"{throughput_ratio:.2f}: {_met(throughput_ratio >= _THROUGHPUT_TARGET)}",
        ),
        ("batch with interactive chats, output tok/s", batch_row(during)),
        ("1-minute load average at start / end", f"{load[0]:.2f} / {load[1]:.2f}"),
    ]
    return metric_report(
        f"--max-num-seqs {args.max_num_seqs}; batches of {args.requests} chats of about "
        f"{_PROMPT_WORDS} words -> {args.max_tokens} tokens (ignore_eos); interactive: "
        f"{args.interactive} streamed chats -> {args.interactive_tokens} tokens, one at a time, "
        f"{args.pause:g} s apart.",
        rows,
    )


def _met(met: bool) -> str:
    return "met" if met else "**not met**"


def _log(message: str) -> None:
    print(f"[batch {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
