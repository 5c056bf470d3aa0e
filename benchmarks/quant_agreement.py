"""How often the quantized kernels pick float32's greedy token, as llama.cpp's "same top p".

    python benchmarks/quant_agreement.py [--prompts 20] [--tokens 64]

For each chat prompt, the default model in float32 (every weight dequantized) writes a greedy
continuation; every variant then reads prompt + continuation, 16 tokens a step (so the
quantized kernels, not the dequantized path of long prefills, compute it), and the table gives
the share of continuation positions where its top token is float32's, and its mean KL
divergence from float32's next-token distribution.
"""

from __future__ import annotations

import argparse

import torch

from headrace.config import Quantization
from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.llama import LlamaForCausalLM
from headrace.model.loader import load_model
from headrace.model.source import resolve_model
from headrace.text import Tokenizer

_CPU = torch.device("cpu")
_CHUNK = 16
_QUESTIONS = [
    "What is the capital of France?",
    "Name three rivers of Europe and their seas.",
    "Explain quantum computing in simple terms.",
    "Write a haiku about autumn.",
    "How do vaccines work?",
    "Give me a recipe for pancakes.",
    "What causes the seasons on Earth?",
    "Summarize the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "List five uses of a paperclip.",
    "What is the difference between a virus and a bacterium?",
    "How does a bicycle stay upright?",
    "Describe the water cycle.",
    "What is machine learning?",
    "Tell me a fun fact about octopuses.",
    "How do I make a good cup of coffee?",
    "What are prime numbers?",
    "Explain photosynthesis.",
    "Why do cats purr?",
    "What is the tallest mountain in the world?",
]
_VARIANTS: dict[str, tuple[torch.dtype, Quantization]] = {
    "bfloat16 (dequantized)": (torch.bfloat16, "none"),
    "Q4_1 as stored, float32": (torch.float32, "auto"),
    "Q4_1 as stored, bfloat16": (torch.bfloat16, "auto"),
    "int8 (Q8_0 of the dequantized weights), bfloat16": (torch.bfloat16, "int8"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(_QUESTIONS))
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    path = resolve_model(None).path
    tokenizer = Tokenizer.from_path(path)
    reference = load_model(path, torch.float32, _CPU, quantization="none")
    chats = [[{"role": "user", "content": q}] for q in _QUESTIONS[: args.prompts]]
    prompts = [tokenizer.apply_chat_template(chat) for chat in chats]
    sequences = [_greedy(reference, prompt, args.tokens) for prompt in prompts]
    expected = [
        _logits(reference, seq)[len(p) - 1 : -1] for p, seq in zip(prompts, sequences, strict=True)
    ]
    print(f"{len(prompts)} prompts, {args.tokens} greedy float32 tokens each")
    print("| variant | same top token | mean KL from float32 |")
    print("|---|---:|---:|")
    for name, (dtype, quantization) in _VARIANTS.items():
        model = load_model(path, dtype, _CPU, quantization=quantization)
        same, kl, count = 0, 0.0, 0
        for prompt, seq, ref in zip(prompts, sequences, expected, strict=True):
            got = _logits(model, seq)[len(prompt) - 1 : -1]
            same += int((got.argmax(-1) == ref.argmax(-1)).sum())
            kl += float(_kl(ref, got).sum())
            count += len(ref)
        print(f"| {name} | {same / count:.1%} | {kl / count:.4f} |")


def _greedy(model: LlamaForCausalLM, prompt: list[int], tokens: int) -> list[int]:
    reader = _Reader(model, len(prompt) + tokens)
    sequence = list(prompt)
    logits = reader.feed(prompt)
    for _ in range(tokens):
        sequence.append(int(logits[-1].argmax()))
        logits = reader.feed(sequence[-1:])
    return sequence


def _logits(model: LlamaForCausalLM, ids: list[int]) -> torch.Tensor:
    # -> logits [len(ids), V] in float32, the ids read _CHUNK at a time
    reader = _Reader(model, len(ids))
    return torch.cat([reader.feed(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)])


class _Reader:
    """A sequence read into its own paged cache, a few tokens at a time."""

    def __init__(self, model: LlamaForCausalLM, max_len: int) -> None:
        c = model.config
        dtype = model.model.embed_tokens.weight.dtype
        blocks = -(-max_len // _CHUNK)
        shape = (1 + blocks, _CHUNK, c.num_key_value_heads, c.head_dim)
        self.kv = [
            (torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))
            for _ in range(c.num_hidden_layers)
        ]
        self.model = model
        self.table = torch.arange(1, 1 + blocks)  # block i + 1 holds positions i*_CHUNK onwards
        self.length = 0

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        # ids: the next tokens of the sequence -> their logits [len(ids), V]
        start = self.length
        positions = torch.arange(start, start + len(ids))
        end_block = -(-(start + len(ids)) // _CHUNK)
        batch = AttentionBatch(
            slot_mapping=positions + _CHUNK,
            positions=positions,
            decode_block_tables=torch.empty(0, 0, dtype=torch.long),
            decode_lens=torch.empty(0, dtype=torch.long),
            prefills=(PrefillSpan(self.table[:end_block], 0, start, len(ids)),),
        )
        self.length += len(ids)
        return self.model.compute_logits(self.model(torch.tensor(ids), batch, self.kv))


def _kl(reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    p = reference.log_softmax(-1)
    return (p.exp() * (p - got.log_softmax(-1))).sum(-1)


if __name__ == "__main__":
    main()
