"""Log-probabilities of the tokens at some positions, and of the likeliest tokens there."""

from __future__ import annotations

import torch
from torch import Tensor

from headrace.engine.outputs import PositionLogprobs, TokenLogprob

__all__ = ["position_logprobs"]

# The lowest log-probability handed out: a masked token's is about -3e38, an impossible one's
# -inf, and JSON has no infinity (vLLM hands out -9999 alike).
_FLOOR = -9999.0


def position_logprobs(logits: Tensor, chosen: list[int], top: list[int]) -> list[PositionLogprobs]:
    """Row i's log-probabilities of token chosen[i] and of its top[i] likeliest tokens.

    logits: [M, V] float32, one row per position.
    """
    logprobs = torch.log_softmax(logits, dim=-1).clamp_(min=_FLOOR)
    index = torch.tensor(chosen, dtype=torch.long, device=logits.device).unsqueeze(1)
    chosen_logprobs = logprobs.gather(1, index).squeeze(1).tolist()
    most = max(top, default=0)
    top_logprobs: list[list[float]] = [[] for _ in chosen]
    top_ids: list[list[int]] = [[] for _ in chosen]
    if most:
        values, ids = logprobs.topk(most, dim=-1)
        top_logprobs, top_ids = values.tolist(), ids.tolist()
    return [
        PositionLogprobs(
            chosen=TokenLogprob(token, logprob),
            top=tuple(
                TokenLogprob(token_id, value)
                for token_id, value in zip(row_ids[:count], row_values[:count], strict=True)
            ),
        )
        for token, logprob, count, row_ids, row_values in zip(
            chosen, chosen_logprobs, top, top_ids, top_logprobs, strict=True
        )
    ]
