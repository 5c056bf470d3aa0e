"""Loglikelihood scoring throughput: headrace's /v1/completions against transformers, same weights.

    python benchmarks/bench_scoring.py [--prompts 32] [--tokens 256] [--rounds 3]
                                       [--batch 8] [--headrace-args "..."]

Scoring is what lm-evaluation-harness asks of a server: the log-probability of every token of
a prompt (echo, logprobs 1, max_tokens 0). headrace gets --prompts distinct prompts of --tokens
tokens at once, over HTTP; transformers scores the same token ids with the default model's GGUF
weights (dequantized to float32, as it loads them) in batches of --batch, log_softmax over each
position. Both use every core. Prints prompts/s per side (median of --rounds) as a markdown
table, and the largest gap between their log-probabilities.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import time

import torch
from machine import cpu_model
from openai import AsyncOpenAI
from servers import headrace_server
from transformers import AutoModelForCausalLM

from headrace.model.source import resolve_model


def prompts_of(count: int, tokens: int, vocab: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    # Ids from the ordinary part of the vocabulary (special tokens sit at the start).
    return torch.randint(100, vocab, (count, tokens), generator=generator).tolist()


async def score_headrace(url: str, prompts: list[list[int]]) -> tuple[float, list[list[float]]]:
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600) as client:
        model = (await client.models.list()).data[0].id

        async def one(prompt: list[int]) -> list[float]:
            reply = await client.completions.create(
                model=model, prompt=prompt, echo=True, logprobs=1, max_tokens=0
            )
            logprobs = reply.choices[0].logprobs
            assert logprobs is not None and logprobs.token_logprobs is not None
            return [value for value in logprobs.token_logprobs[1:] if value is not None]

        started = time.perf_counter()
        scores = await asyncio.gather(*(one(prompt) for prompt in prompts))
        return len(prompts) / (time.perf_counter() - started), list(scores)


@torch.inference_mode()
def score_transformers(
    model: torch.nn.Module, prompts: list[list[int]], batch: int
) -> tuple[float, list[list[float]]]:
    scores: list[list[float]] = []
    started = time.perf_counter()
    for first in range(0, len(prompts), batch):
        ids = torch.tensor(prompts[first : first + batch])
        logprobs = torch.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
        scores += logprobs.gather(2, ids[:, 1:, None]).squeeze(2).tolist()
    return len(prompts) / (time.perf_counter() - started), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    args = parser.parse_args()
    path = resolve_model(None).path
    hf = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, torch_dtype=torch.float32
    )
    hf.eval()
    prompts = prompts_of(args.prompts, args.tokens, hf.config.vocab_size)
    rates: dict[str, list[float]] = {"headrace": [], "transformers": []}
    gap = 0.0
    with headrace_server("scoring", shlex.split(args.headrace_args)) as server:
        asyncio.run(score_headrace(server.url, prompts[:2]))  # warm-up
        for _ in range(args.rounds):
            rate, ours = asyncio.run(score_headrace(server.url, prompts))
            rates["headrace"].append(rate)
            rate, theirs = score_transformers(hf, prompts, args.batch)
            rates["transformers"].append(rate)
            pairs = zip(ours, theirs, strict=True)
            gap = max(abs(a - b) for x, y in pairs for a, b in zip(x, y, strict=True))
    print(f"CPU: {cpu_model()}; {args.prompts} prompts of {args.tokens} tokens\n")
    print("| scorer | prompts/s | ratio |")
    print("|---|---:|---:|")
    base = statistics.median(rates["transformers"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x |")
    print(f"\nlargest log-probability gap between the two: {gap:.3f}")


if __name__ == "__main__":
    main()
