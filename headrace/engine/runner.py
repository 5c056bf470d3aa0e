"""Turns a scheduled step into tensors, runs the model, and samples the next tokens."""

from __future__ import annotations

import torch

from headrace.engine.grammar_bitmask import GrammarBitmask
from headrace.engine.kv_cache import KVCache
from headrace.engine.request import Request
from headrace.engine.sampler import sample
from headrace.engine.scheduler import SchedulerOutput
from headrace.model.attention import AttentionBatch, PrefillSpan
from headrace.model.llama import LlamaForCausalLM

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv_cache: KVCache, device: torch.device) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.device = device
        self.grammar_bitmask = GrammarBitmask(model.config.vocab_size, device)

    @torch.inference_mode()
    def execute(self, step: SchedulerOutput) -> dict[Request, int]:
        """Run one step; return the next token of every request whose prompt is now computed."""
        input_ids: list[int] = []
        positions: list[int] = []
        token_slots: list[int] = []
        sampled: list[Request] = []
        sample_rows: list[int] = []

        context_lens = [r.num_computed_tokens + 1 for r in step.decodes]
        decode_max_len = max(context_lens, default=0)
        for request in step.decodes:
            assert request.slot is not None
            self.kv_cache.ensure_zeroed(request.slot, decode_max_len)
            sample_rows.append(len(input_ids))
            sampled.append(request)
            input_ids.append(request.last_token_id)
            positions.append(request.num_computed_tokens)
            token_slots.append(request.slot)

        spans: list[PrefillSpan] = []
        for chunk in step.prefills:
            request, start = chunk.request, chunk.request.num_computed_tokens
            end = start + chunk.num_tokens
            assert request.slot is not None
            self.kv_cache.ensure_zeroed(request.slot, end)
            spans.append(PrefillSpan(request.slot, len(input_ids), start, chunk.num_tokens))
            input_ids += request.token_ids(start, end)
            positions += range(start, end)
            token_slots += [request.slot] * chunk.num_tokens
            if end == request.num_tokens:
                sample_rows.append(len(input_ids) - 1)
                sampled.append(request)

        batch = AttentionBatch(
            token_slots=self._tensor(token_slots),
            positions=self._tensor(positions),
            decode_slots=self._tensor(token_slots[: len(step.decodes)]),
            decode_mask=self._decode_mask(context_lens, decode_max_len),
            decode_max_len=decode_max_len,
            prefills=tuple(spans),
        )
        hidden = self.model(self._tensor(input_ids), batch, self.kv_cache.layers)
        if not sampled:
            return {}
        logits = self.model.compute_logits(hidden[self._tensor(sample_rows)])
        self.grammar_bitmask.apply(logits, sampled)
        tokens = sample(logits, [r.params for r in sampled], [r.generator for r in sampled])
        return dict(zip(sampled, tokens, strict=True))

    def _decode_mask(self, context_lens: list[int], max_len: int) -> torch.Tensor:
        # -> [D, 1, 1, max_len], True where a decoding sequence has filled the cache
        lens = self._tensor(context_lens).unsqueeze(1)
        mask = torch.arange(max_len, device=self.device) < lens
        return mask.view(len(context_lens), 1, 1, max_len)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)
