"""Which requests run in the next step, and how many of their tokens.

Running sequences decode first, one token each; the rest of the step's token budget goes to
prefill, continuing partly-prefilled prompts before admitting new ones. A long prompt is
prefilled in chunks, so it never freezes the streams already running.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from headrace.config import EngineConfig
from headrace.engine.kv_cache import KVCache
from headrace.engine.request import Request, RequestStatus

__all__ = ["PrefillChunk", "Scheduler", "SchedulerOutput"]


@dataclass(frozen=True)
class PrefillChunk:
    # The request whose prompt is being prefilled.
    request: Request
    # Prompt tokens computed in this step.
    num_tokens: int


@dataclass(frozen=True)
class SchedulerOutput:
    # Requests decoding one token each, in batch order.
    decodes: list[Request]
    # Prompt chunks, in batch order after the decodes.
    prefills: list[PrefillChunk]

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills


class Scheduler:
    def __init__(self, config: EngineConfig, kv_cache: KVCache) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def schedule(self) -> SchedulerOutput:
        decodes = [r for r in self.running if not r.is_prefilling]
        budget = self.config.max_num_batched_tokens - len(decodes)
        prefills: list[PrefillChunk] = []
        for request in self.running:
            if request.is_prefilling and budget > 0:
                prefills.append(self._chunk(request, budget))
                budget -= prefills[-1].num_tokens
        while (
            self.waiting
            and budget > 0
            and len(self.running) < self.config.max_num_seqs
            and self.kv_cache.num_free_slots
        ):
            request = self.waiting.popleft()
            request.slot = self.kv_cache.allocate()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            prefills.append(self._chunk(request, budget))
            budget -= prefills[-1].num_tokens
        return SchedulerOutput(decodes=decodes, prefills=prefills)

    def finish(self, request: Request) -> None:
        """Take a finished or aborted request out, freeing its slot."""
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
            assert request.slot is not None
            self.kv_cache.free(request.slot)
            request.slot = None
        elif request.status is RequestStatus.WAITING:
            self.waiting.remove(request)
        request.status = RequestStatus.FINISHED

    @staticmethod
    def _chunk(request: Request, budget: int) -> PrefillChunk:
        remaining = len(request.prompt_token_ids) - request.num_computed_tokens
        return PrefillChunk(request=request, num_tokens=min(remaining, budget))
