"""Picks each sequence's next token from its logits: greedy, temperature and top-p."""

from __future__ import annotations

import torch
from torch import Tensor

from headrace.engine.outputs import SamplingParams

__all__ = ["sample"]


def sample(
    logits: Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    # logits: [N, V] float32 -> N token ids
    greedy = logits.argmax(dim=-1).tolist()
    tokens: list[int] = []
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            tokens.append(greedy[row])
            continue
        probs = torch.softmax(logits[row] / p.temperature, dim=-1)
        if p.top_p < 1:
            probs = _top_p(probs, p.top_p)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens


def _top_p(probs: Tensor, top_p: float) -> Tensor:
    # probs: [V] -> [V], zero outside the nucleus
    sorted_probs, order = probs.sort(descending=True)
    # Keep a token while the mass before it is below top_p: the top token always stays.
    outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
    sorted_probs[outside] = 0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)
