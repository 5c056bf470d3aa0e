"""Picks each sequence's next token from its logits: biases and penalties, then greedy,
temperature and top-p."""

from __future__ import annotations

import torch
from torch import Tensor

from headrace.engine.outputs import SamplingParams
from headrace.engine.request import Request, isolated

__all__ = ["sample"]


def sample(logits: Tensor, requests: list[Request]) -> list[int | None]:
    """The next token of each request, row i of `logits` being requests[i]'s.

    A row whose sampling raises fails its request alone (see `isolated`) and gets None, as does
    a request that failed earlier in the step. Rows of requests with a logit bias or a penalty
    are changed in place first; a batch without any costs nothing more.
    """
    # logits: [N, V] float32
    for row, request in enumerate(requests):
        if request.params.adjusts_logits:
            isolated(request, _adjust, logits[row], request)
    greedy = logits.argmax(dim=-1).tolist()
    return [
        isolated(request, _sample_row, logits[row], request.params, request.generator, greedy[row])
        for row, request in enumerate(requests)
    ]


def _adjust(logits: Tensor, request: Request) -> None:
    # logits: [V], changed in place: the bias added, then the penalties, as vLLM orders them.
    params, vocab = request.params, logits.shape[0]
    if params.logit_bias:
        ids, biases = zip(*params.logit_bias, strict=True)
        logits[list(ids)] += torch.tensor(biases, device=logits.device)
    output = torch.tensor(request.output_token_ids, dtype=torch.long, device=logits.device)
    if params.presence_penalty or params.frequency_penalty:
        counts = torch.bincount(output, minlength=vocab)[:vocab]
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    if params.repetition_penalty != 1:
        prompt = torch.tensor(request.prompt_token_ids, dtype=torch.long, device=logits.device)
        seen = torch.zeros(vocab, dtype=torch.bool, device=logits.device)
        seen[prompt[prompt < vocab]] = True
        seen[output] = True
        penalty = params.repetition_penalty
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits.copy_(torch.where(seen, penalized, logits))


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
