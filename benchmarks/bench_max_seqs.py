"""What --max-num-seqs does to a burst of streams: headrace alone, one setting after another.

    python benchmarks/bench_max_seqs.py [--values 16 32 64] [--streams 32] [--prompt-words 240]
                                        [--output-len 128] [--headrace-args "..."]

Each setting gets its own server on the default model, a warm-up, then --streams chats sent at
once (fresh prompts of about --prompt-words tokens, greedy, ignore_eos, --output-len tokens
out). Prints TTFT p50/p99, ITL p50 and output tok/s per setting as a markdown table.
"""

from __future__ import annotations

import argparse
import shlex

from http_runs import HttpRunner, text_prompt
from machine import cpu_model
from servers import headrace_server
from timing import aggregate_tok_s, itls_ms, percentile, ttfts_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=240)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    args = parser.parse_args()
    print(
        f"{cpu_model()}; {args.streams} streams of ~{args.prompt_words} words -> "
        f"{args.output_len} tokens"
    )
    print("| --max-num-seqs | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | output tok/s |")
    print("|---:|---:|---:|---:|---:|")
    index = 0
    for value in args.values:
        flags = ["--max-num-seqs", str(value), *shlex.split(args.headrace_args)]
        with headrace_server(f"max-num-seqs-{value}", flags) as server:
            client = HttpRunner(server.url, None)
            client.run([text_prompt(index, 32)], 4)  # warm-up
            index += 1
            prompts = [text_prompt(index + i, args.prompt_words) for i in range(args.streams)]
            index += args.streams
            streams = client.run(prompts, args.output_len)
        ttfts = ttfts_ms(streams)
        print(
            f"| {value} | {percentile(ttfts, 50):.0f} | {percentile(ttfts, 99):.0f} | "
            f"{percentile(itls_ms(streams), 50):.1f} | {aggregate_tok_s(streams):.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
