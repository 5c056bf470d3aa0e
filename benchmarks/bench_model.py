"""The model's forward alone: milliseconds per decode step, without engine, sampler or server.

    python benchmarks/bench_model.py [--dtypes float32 bfloat16 int8 gguf-bfloat16]
                                     [--batch-sizes 1 32]
                                     [--context 256] [--steps 20] [--rounds 7] [--profile]
                                     [--compiled]

One step is what the runner does to decode: the forward of M tokens, one per sequence, each
at position --context - 1, then the logits of all M rows. The cases (dtype x batch size) run
interleaved, --steps steps each per round, so a noisy machine slows them all alike; each
figure is the median step over all rounds. "int8" is int8 weights computing in bfloat16,
"gguf-*" the GGUF file's quantized weights as stored (Q4_1 and Q8_0 for the default model);
plain dtypes dequantize every weight.
--profile instead prints torch.profiler's table of one case's steps (the first dtype and
batch size). --compiled runs the step the engine decodes with, compiled by torch.compile,
rather than the eager forward.

glibc's malloc may hand the large attention temporaries back to the kernel and fault them in
again every step (M=32 float32 then runs up to 2x slower, depending on allocation order);
MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 in the environment
rules that out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from headrace.config import Quantization
from headrace.model.attention import AttentionBatch
from headrace.model.compiled import DecodeStep, compile_decode
from headrace.model.llama import LlamaForCausalLM
from headrace.model.loader import load_model
from headrace.model.source import resolve_model

# Positions per KV-cache block, headrace's default.
_BLOCK_SIZE = 16

# --dtypes name -> activation dtype, and which weights stay quantized.
_DTYPES: dict[str, tuple[torch.dtype, Quantization]] = {
    "float32": (torch.float32, "none"),
    "bfloat16": (torch.bfloat16, "none"),
    "int8": (torch.bfloat16, "int8"),
    "gguf-float32": (torch.float32, "auto"),
    "gguf-bfloat16": (torch.bfloat16, "auto"),
}


@dataclass
class Case:
    model: LlamaForCausalLM
    batch_size: int
    context: int
    compiled: bool
    kv: list[tuple[torch.Tensor, torch.Tensor]] = field(init=False)
    batch: AttentionBatch = field(init=False)
    ids: torch.Tensor = field(init=False)
    step_seconds: list[float] = field(default_factory=list)
    decode: DecodeStep | None = field(init=False, default=None)

    # Built as the engine builds its steps' tensors, under inference mode (else they would not
    # match the compiled step's guards, and it would run eagerly).
    @torch.inference_mode()
    def __post_init__(self) -> None:
        c = self.model.config
        dtype = self.model.model.embed_tokens.weight.dtype
        # Sequence i holds blocks 1 + i * per_seq onwards (block 0 is the null block).
        per_seq = -(-self.context // _BLOCK_SIZE)
        shape = (1 + self.batch_size * per_seq, _BLOCK_SIZE, c.num_key_value_heads, c.head_dim)
        self.kv = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))] * len(
            self.model.model.layers
        )
        tables = 1 + torch.arange(self.batch_size * per_seq).view(self.batch_size, per_seq)
        position = self.context - 1
        self.batch = AttentionBatch(
            slot_mapping=tables[:, position // _BLOCK_SIZE] * _BLOCK_SIZE + position % _BLOCK_SIZE,
            positions=torch.full((self.batch_size,), position),
            decode_block_tables=tables,
            decode_lens=torch.full((self.batch_size,), position + 1),
            prefills=(),
        )
        self.ids = torch.randint(100, c.vocab_size, (self.batch_size,))
        if self.compiled:
            self.decode = compile_decode(self.model, self.kv, _BLOCK_SIZE)

    @torch.inference_mode()
    def step(self) -> None:
        if self.decode is not None:
            self.decode(self.ids, self.batch, self.kv)
        else:
            self.model.compute_logits(self.model(self.ids, self.batch, self.kv))

    def run(self, steps: int) -> None:
        for _ in range(steps):
            started = time.perf_counter()
            self.step()
            self.step_seconds.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dtypes", nargs="+", choices=list(_DTYPES), default=["float32", "bfloat16"]
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compiled", action="store_true")
    args = parser.parse_args()

    path = resolve_model(None).path
    models = {name: _load(path, name) for name in args.dtypes}
    cases = {
        (name, m): Case(models[name], m, args.context, args.compiled)
        for name in args.dtypes
        for m in args.batch_sizes
    }
    for case in cases.values():
        case.run(3)  # warm-up: first-call allocations and oneDNN primitive creation
        case.step_seconds.clear()
    if args.profile:
        print_profile(next(iter(cases.values())), args.steps)
        return
    for _ in range(args.rounds):
        for case in cases.values():
            case.run(args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, context {args.context}")
    print("| dtype | M | ms/step | tok/s |")
    print("|---|---|---|---|")
    for (name, m), case in cases.items():
        ms = 1000 * statistics.median(case.step_seconds)
        print(f"| {name} | {m} | {ms:.2f} | {1000 * m / ms:.1f} |")


def _load(path: Path, name: str) -> LlamaForCausalLM:
    dtype, quantization = _DTYPES[name]
    return load_model(path, dtype, torch.device("cpu"), quantization=quantization)


def print_profile(case: Case, steps: int) -> None:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        case.run(steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
