"""Picks each sequence's next token from its logits: greedy, temperature and top-p."""

from __future__ import annotations

import torch
from torch import Tensor

from headrace.engine.outputs import SamplingParams
from headrace.engine.request import Request, isolated

__all__ = ["sample"]


def sample(logits: Tensor, requests: list[Request]) -> list[int | None]:
    """The next token of each request, row i of `logits` being requests[i]'s.

    A row whose sampling raises fails its request alone (see `isolated`) and gets None, as does
    a request that failed earlier in the step.
    """
    # logits: [N, V] float32
    greedy = logits.argmax(dim=-1).tolist()
    return [
        isolated(request, _sample_row, logits[row], request.params, request.generator, greedy[row])
        for row, request in enumerate(requests)
    ]


def _sample_row(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None, greedy: int
) -> int:
    # logits: [V] float32; greedy: its argmax
    if params.temperature == 0:
        return greedy
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1:
        probs = _top_p(probs, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def _top_p(probs: Tensor, top_p: float) -> Tensor:
    # probs: [V] -> [V], zero outside the nucleus
    sorted_probs, order = probs.sort(descending=True)
    # Keep a token while the mass before it is below top_p: the top token always stays.
    outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
    sorted_probs[outside] = 0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)
