"""What sampling costs a decode step, with and without logit biases and penalties.

    python benchmarks/bench_sampler.py [--rows 1 16 32] [--rounds 15] [--steps 20]

One step samples the next token of --rows sequences from float32 logits over the default
model's vocabulary (49,152), Zipf-distributed, each sequence with a 256-token prompt and 128
generated tokens, as the runner calls `sample` after the forward. Cases: "plain" (greedy),
"sampled" (temperature 0.7, top_p 0.9), and each with presence and frequency penalties, vLLM's
repetition penalty and a 10-token logit_bias on every sequence. Cases run interleaved, --steps
steps each per round, and each figure is the median step over --rounds rounds. Prints one
markdown table on stdout: milliseconds a step, and what the biases and penalties add.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import cpu_model

from headrace.engine.outputs import SamplingParams
from headrace.engine.request import Request
from headrace.engine.sampler import sample

_VOCAB = 49152
_PROMPT, _GENERATED = 256, 128
_ADJUSTED = dict(
    presence_penalty=0.5,
    frequency_penalty=0.5,
    repetition_penalty=1.1,
    logit_bias=tuple((token, 5.0) for token in range(1000, 1010)),
)
_CASES = {
    "plain": dict(temperature=0.0),
    "sampled": dict(temperature=0.7, top_p=0.9),
    "plain + penalties + bias": dict(temperature=0.0, **_ADJUSTED),
    "sampled + penalties + bias": dict(temperature=0.7, top_p=0.9, **_ADJUSTED),
}


def requests(rows: int, params: dict[str, object]) -> list[Request]:
    generator = torch.Generator().manual_seed(rows)
    made = []
    for row in range(rows):
        tokens = torch.randint(100, _VOCAB, (_PROMPT + _GENERATED,), generator=generator)
        sampling = SamplingParams(512, **params)  # type: ignore[arg-type]
        request = Request(f"r{row}", tokens[:_PROMPT].tolist(), sampling)
        request.output_token_ids = tokens[_PROMPT:].tolist()
        made.append(request)
    return made


def zipf_logits(rows: int) -> torch.Tensor:
    # Each row ranks the vocabulary at random; the token of rank r has probability ~ 1 / r, as
    # word frequencies go (a language model's next-token distribution is peaked, not flat: with
    # flat logits the nucleus of top_p 0.9 spans most of the vocabulary).
    ranks = torch.stack([torch.randperm(_VOCAB) + 1 for _ in range(rows)])
    return -ranks.double().log().float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = {
        (name, rows): requests(rows, params)
        for rows in args.rows
        for name, params in _CASES.items()
    }
    logits = {rows: zipf_logits(rows) for rows in args.rows}
    times: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for (name, rows), batch in cases.items():
                step = logits[rows].clone()
                started = time.perf_counter()
                for _ in range(args.steps):
                    step.copy_(logits[rows])
                    sample(step, batch)
                times[name, rows].append((time.perf_counter() - started) / args.steps * 1e3)
    print(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| sequences | case | ms a step | added by penalties + bias |")
    print("|---:|---|---:|---:|")
    for (name, rows), measured in times.items():
        median = statistics.median(measured)
        base = name.split(" + ")[0]
        added = median - statistics.median(times[base, rows]) if base != name else None
        extra = "" if added is None else f"{added:+.2f} ms"
        print(f"| {rows} | {name} | {median:.2f} | {extra} |")


if __name__ == "__main__":
    main()
