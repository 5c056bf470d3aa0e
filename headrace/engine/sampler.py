"""Picks each sequence's next token from its logits: min_tokens, biases and penalties, then
greedy, or temperature, top-k, min-p and top-p."""

from __future__ import annotations

import torch
from torch import Tensor

from headrace.engine.outputs import SamplingParams
from headrace.engine.request import Request, isolated

__all__ = ["sample"]

# How many of the most likely tokens a nucleus is looked for among, in turn, before sorting the
# whole vocabulary (sorting SmolLM2's 49,152 took 3.3 ms a row on 2 cores, the top 1,024 0.4).
_NUCLEUS_CANDIDATES = (64, 1024)


def sample(logits: Tensor, requests: list[Request]) -> list[int | None]:
    """The next token of each request, row i of `logits` being requests[i]'s.

    A row whose sampling raises fails its request alone (see `isolated`) and gets None, as does
    a request that failed earlier in the step. Rows of requests with min_tokens, a logit bias or
    a penalty are changed in place first; a batch without any costs nothing more.
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
    # logits: [V], changed in place: stop tokens masked before min_tokens, the bias added, then
    # the penalties, as vLLM orders them.
    # Only the logits of the tokens concerned are read and written, never the whole row.
    params, device = request.params, logits.device
    if request.num_generated_tokens < params.min_tokens and params.stop_token_ids:
        logits[list(params.stop_token_ids)] = -torch.inf
    if params.logit_bias:
        ids, biases = zip(*params.logit_bias, strict=True)
        logits[list(ids)] += torch.tensor(biases, device=device)
    output = torch.tensor(request.output_token_ids, dtype=torch.long, device=device)
    if (params.presence_penalty or params.frequency_penalty) and output.numel():
        tokens, counts = torch.unique(output, return_counts=True)
        logits[tokens] -= params.frequency_penalty * counts + params.presence_penalty
    if params.repetition_penalty != 1:
        prompt = torch.tensor(request.prompt_token_ids, dtype=torch.long, device=device)
        seen = torch.unique(torch.cat((prompt[prompt < logits.shape[0]], output)))
        values, penalty = logits[seen], params.repetition_penalty
        logits[seen] = torch.where(values > 0, values / penalty, values * penalty)


def _sample_row(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None, greedy: int
) -> int:
    # logits: [V] float32; greedy: its argmax
    if params.temperature == 0:
        return greedy
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_k and params.top_k < probs.shape[0]:
        kept, order = probs.topk(params.top_k)
        probs = torch.zeros_like(probs).scatter_(0, order, kept)
    if params.min_p:
        probs[probs < params.min_p * probs.max()] = 0
    if params.top_p < 1:
        # The nucleus of what top_k and min_p left, as a distribution of its own.
        probs = _top_p(probs / probs.sum(), params.top_p)
    return _draw(probs, generator)


def _draw(probs: Tensor, generator: torch.Generator | None) -> int:
    # One uniform draw against the cumulative probabilities: the first token whose running
    # total passes it (torch.multinomial took 1 ms a row on 2 cores, this 0.05).
    totals = probs.cumsum(0)
    point = torch.rand(1, generator=generator, device=probs.device) * totals[-1]
    # side="right": never a token of probability 0, whose total equals the one before it.
    index = torch.searchsorted(totals, point, right=True)
    return int(index.clamp(max=probs.shape[0] - 1))


def _top_p(probs: Tensor, top_p: float) -> Tensor:
    # probs: [V] -> [V], zero outside the nucleus
    for candidates in _NUCLEUS_CANDIDATES:
        kept, order = probs.topk(min(candidates, probs.shape[0]))  # descending
        if kept.sum() >= top_p:  # the nucleus lies among them
            break
    else:
        kept, order = probs.sort(descending=True)
    # Keep a token while the mass before it is below top_p: the top token always stays.
    outside = kept.cumsum(0) - kept >= top_p
    kept[outside] = 0
    return torch.zeros_like(probs).scatter_(0, order, kept)
