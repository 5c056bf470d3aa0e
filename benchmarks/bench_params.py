"""What the issue-12 request parameters cost a server: decode throughput before and after, and
with penalties, logit_bias and logprobs on every request.

    python benchmarks/bench_params.py --before PATH [--streams 1 16] [--rounds 3]
                                      [--output-len 128] [--headrace-args "..."]

--before is a checkout of an older commit (e.g. `git worktree add /tmp/before e391e9a`); its
server and this checkout's take turns, one at a time, --rounds times. Each turn sends, for each
--streams value, that many chats at once (fresh prompts of about 64 tokens, greedy, ignore_eos,
--output-len tokens out) and measures output tok/s (all tokens over first submit to last
token). This checkout also runs each with presence 0.5, frequency 0.5, repetition 1.1, a
10-token logit_bias and logprobs with top_logprobs 5 on every request. Prints the medians as
a markdown table.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path

from http_runs import HttpRunner, text_prompt
from machine import cpu_model
from servers import headrace_server
from timing import aggregate_tok_s

_PARAMETERS = {
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "repetition_penalty": 1.1,
    "logit_bias": {str(token): 1.0 for token in range(1000, 1010)},
    "logprobs": True,
    "top_logprobs": 5,
}
_PROMPT_WORDS = 64


def tok_s(url: str, streams: int, output_len: int, turn: int, extra: dict[str, object]) -> float:
    runner = HttpRunner(url, None, extra)
    prompts = [text_prompt(1000 * turn + i, _PROMPT_WORDS) for i in range(streams)]
    return aggregate_tok_s(runner.run(prompts, output_len))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    args = parser.parse_args()
    flags = shlex.split(args.headrace_args)
    cases: dict[tuple[str, int], list[float]] = {}
    # Which cases each server runs, and with what on every request.
    sides: dict[str, tuple[Path | None, dict[str, dict[str, object]]]] = {
        "before": (args.before, {"before": {}}),
        "after": (None, {"after": {}, "after + parameters": _PARAMETERS}),
    }
    for turn in range(args.rounds):
        for side, (source, runs) in sides.items():
            with headrace_server(f"params-{side}", flags, source=source) as server:
                tok_s(server.url, 2, 16, -1, {})  # warm-up
                for label, extra in runs.items():
                    for streams in args.streams:
                        value = tok_s(server.url, streams, args.output_len, turn, extra)
                        cases.setdefault((label, streams), []).append(value)
    print(f"CPU: {cpu_model()}; medians of {args.rounds} rounds, output tok/s\n")
    print("| streams | before | after | after, every request with penalties + bias + logprobs |")
    print("|---:|---:|---:|---:|")
    for streams in args.streams:
        row = [statistics.median(cases[label, streams]) for label in
               ("before", "after", "after + parameters")]  # fmt: skip
        print(f"| {streams} | " + " | ".join(f"{value:.1f}" for value in row) + " |")


if __name__ == "__main__":
    main()
