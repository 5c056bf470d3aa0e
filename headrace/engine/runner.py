"""Turns a scheduled step into tensors, runs the model, and samples the next tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from headrace.engine.block_manager import NULL_BLOCK
from headrace.engine.grammar_bitmask import GrammarBitmask
from headrace.engine.kv_cache import KVCache
from headrace.engine.logprobs import position_logprobs
from headrace.engine.outputs import PositionLogprobs
from headrace.engine.request import Request
from headrace.engine.sampler import sample
from headrace.engine.scheduler import SchedulerOutput
from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.compiled import DecodeStep
from headrace.model.kernel_caches import bucketed
from headrace.model.llama import LlamaForCausalLM

__all__ = ["ModelRunner", "RunnerOutput"]

# Prompt positions whose logits are computed at once for prompt log-probabilities: 256 rows of
# a 49,152-token vocabulary take 50 MB.
_PROMPT_LOGPROB_ROWS = 256


@dataclass(frozen=True)
class RunnerOutput:
    # The next token of every request whose tokens are now all computed and that samples one;
    # None where its own part of the step failed (it carries the `error`).
    tokens: dict[Request, int | None] = field(default_factory=dict)
    # The log-probabilities of those tokens, for requests that ask for them.
    logprobs: dict[Request, PositionLogprobs] = field(default_factory=dict)
    # For requests that ask for prompt log-probabilities: those of the prompt positions this
    # step computed for the first time, in order.
    prompt_logprobs: dict[Request, list[PositionLogprobs]] = field(default_factory=dict)


@dataclass(frozen=True)
class _PromptRows:
    # The request whose prompt is scored.
    request: Request
    # Rows of the step's hidden states, one per scored position.
    rows: list[int]
    # The prompt token after each of those positions.
    targets: list[int]


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        kv_cache: KVCache,
        device: torch.device,
    ) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.device = device
        # The compiled forward and logits of steps that only decode, once there is one: set once
        # by the engine's compiling thread; the steps before it run eagerly.
        self.decode_step: DecodeStep | None = None
        self.grammar_bitmask = GrammarBitmask(model.config.vocab_size, device)

    @torch.inference_mode()
    def execute(self, step: SchedulerOutput) -> RunnerOutput:
        """Run one step: the next tokens, and the log-probabilities the requests ask for.

        A request whose own part of the step failed (its grammar mask, its sampling) gets None
        and carries the `error`; a failure of the model fails the step and raises.
        """
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        sampled: list[Request] = []
        sample_rows: list[int] = []

        for request in step.decodes:
            position = request.num_computed_tokens
            sample_rows.append(len(input_ids))
            sampled.append(request)
            input_ids.append(request.last_token_id)
            positions.append(position)
            slot_mapping += self._slots(request, position, position + 1)

        spans: list[PrefillSpan] = []
        scored: list[_PromptRows] = []
        for chunk in step.prefills:
            request, start = chunk.request, chunk.request.num_computed_tokens
            end = start + chunk.num_tokens
            table = self._tensor(request.block_ids[: -(-end // self.kv_cache.block_size)])
            spans.append(PrefillSpan(table, len(input_ids), start, chunk.num_tokens))
            if request.needs_prompt_logprobs:
                scored.append(_prompt_rows(request, len(input_ids), start, end))
            input_ids += request.token_ids(start, end)
            positions += range(start, end)
            slot_mapping += self._slots(request, start, end)
            if end == request.num_tokens and request.params.max_tokens:
                sample_rows.append(len(input_ids) - 1)
                sampled.append(request)

        slots = self._tensor(slot_mapping)
        if spans:
            # Steps with prefill chunks come in any size, and oneDNN keeps a kernel for every
            # matmul shape it meets (see kernel_caches): the step is padded to a bucketed size.
            padding = bucketed(len(input_ids)) - len(input_ids)
            input_ids += [0] * padding
            positions += [0] * padding
        tables = self._block_tables(step.decodes)
        batch = AttentionBatch(
            slot_mapping=slots,
            positions=self._tensor(positions),
            decode_block_tables=tables,
            decode_lens=self._tensor([r.num_computed_tokens + 1 for r in step.decodes]),
            prefills=tuple(spans),
        )
        ids = self._tensor(input_ids)
        prompt_logprobs: dict[Request, list[PositionLogprobs]] = {}
        if self.decode_step is not None and not spans:
            logits = self.decode_step(ids, batch, self.kv_cache.layers)
        else:
            hidden = self.model(ids, batch, self.kv_cache.layers)
            prompt_logprobs = {rows.request: self._score(hidden, rows) for rows in scored}
            if not sampled:
                return RunnerOutput(prompt_logprobs=prompt_logprobs)
            logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        self.grammar_bitmask.apply(logits, sampled)
        tokens = sample(logits, sampled)
        return RunnerOutput(
            tokens=dict(zip(sampled, tokens, strict=True)),
            logprobs=_sampled_logprobs(logits, sampled, tokens),
            prompt_logprobs=prompt_logprobs,
        )

    def _score(self, hidden: Tensor, scored: _PromptRows) -> list[PositionLogprobs]:
        """The log-probabilities of the prompt tokens after the scored positions."""
        # hidden: [T, C], the step's hidden states
        top = scored.request.params.prompt_logprobs or 0
        result: list[PositionLogprobs] = []
        for first in range(0, len(scored.rows), _PROMPT_LOGPROB_ROWS):
            rows = scored.rows[first : first + _PROMPT_LOGPROB_ROWS]
            targets = scored.targets[first : first + _PROMPT_LOGPROB_ROWS]
            logits = self.model.compute_logits(hidden[self._tensor(rows)])
            result += position_logprobs(logits, targets, [top] * len(rows))
        return result

    def _slots(self, request: Request, start: int, end: int) -> list[int]:
        """Where positions [start, end) of a request go in the cache."""
        size, blocks = self.kv_cache.block_size, request.block_ids
        return [blocks[p // size] * size + p % size for p in range(start, end)]

    def _block_tables(self, decodes: list[Request]) -> torch.Tensor:
        # -> [D, B]: each decoding sequence's blocks, padded with the null block
        width = max((len(r.block_ids) for r in decodes), default=0)
        rows = [r.block_ids + [NULL_BLOCK] * (width - len(r.block_ids)) for r in decodes]
        return torch.tensor(rows, dtype=torch.long, device=self.device).view(len(decodes), width)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)


def _prompt_rows(request: Request, offset: int, start: int, end: int) -> _PromptRows:
    """The positions of [start, end), at `offset` in the step, whose next prompt token is not
    scored yet: each position's logits score the token after it."""
    prompt = request.prompt_token_ids
    first = max(start, len(request.prompt_logprobs))
    positions = range(first, min(end, len(prompt) - 1))
    return _PromptRows(
        request,
        rows=[offset + position - start for position in positions],
        targets=[prompt[position + 1] for position in positions],
    )


def _sampled_logprobs(
    logits: Tensor, sampled: list[Request], tokens: list[int | None]
) -> dict[Request, PositionLogprobs]:
    """The log-probabilities of the sampled tokens, for the requests that ask for them."""
    # logits: [N, V], row i sampled[i]'s, as the sampler saw them before temperature
    picks = [
        (row, token)
        for row, (request, token) in enumerate(zip(sampled, tokens, strict=True))
        if request.params.logprobs is not None and token is not None
    ]
    if not picks:
        return {}
    rows = [row for row, _ in picks]
    requests = [sampled[row] for row in rows]
    found = position_logprobs(
        logits[rows],
        [token for _, token in picks],
        [request.params.logprobs or 0 for request in requests],
    )
    return dict(zip(requests, found, strict=True))
