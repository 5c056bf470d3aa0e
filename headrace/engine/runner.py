"""Turns a scheduled step into tensors, runs the model, and samples the next tokens."""

from __future__ import annotations

import torch

from headrace.engine.block_manager import NULL_BLOCK
from headrace.engine.grammar_bitmask import GrammarBitmask
from headrace.engine.kv_cache import KVCache
from headrace.engine.request import Request
from headrace.engine.sampler import sample
from headrace.engine.scheduler import SchedulerOutput
from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.compiled import DecodeStep
from headrace.model.kernel_caches import bucketed
from headrace.model.llama import LlamaForCausalLM

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        kv_cache: KVCache,
        device: torch.device,
        decode_step: DecodeStep | None = None,
    ) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.device = device
        # The compiled forward and logits of steps that only decode, if there is one.
        self.decode_step = decode_step
        self.grammar_bitmask = GrammarBitmask(model.config.vocab_size, device)

    @torch.inference_mode()
    def execute(self, step: SchedulerOutput) -> dict[Request, int | None]:
        """Run one step; return the next token of every request whose tokens are now computed.

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
        for chunk in step.prefills:
            request, start = chunk.request, chunk.request.num_computed_tokens
            end = start + chunk.num_tokens
            table = self._tensor(request.block_ids[: -(-end // self.kv_cache.block_size)])
            spans.append(PrefillSpan(table, len(input_ids), start, chunk.num_tokens))
            input_ids += request.token_ids(start, end)
            positions += range(start, end)
            slot_mapping += self._slots(request, start, end)
            if end == request.num_tokens:
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
        if self.decode_step is not None and not spans:
            logits = self.decode_step(ids, batch, self.kv_cache.layers)
        else:
            hidden = self.model(ids, batch, self.kv_cache.layers)
            if not sampled:
                return {}
            logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        self.grammar_bitmask.apply(logits, sampled)
        tokens = sample(logits, sampled)
        return dict(zip(sampled, tokens, strict=True))

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
