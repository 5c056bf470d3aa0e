"""Which requests run in the next step, and how many of their tokens.

Running sequences decode first, one token each; the rest of the step's token budget goes to
prefill, continuing partly-prefilled prompts before admitting new ones. A long prompt is
prefilled in chunks, so it never freezes the streams already running.

A request is admitted only when the KV cache has blocks for its whole prompt, beyond a small
reserve kept for the running ones to decode into, and, when it shares its prompt with a leader
(another sample of the same prompt), once the leader has computed it: the prompt is then found
in the prefix cache rather than computed again. When a decoding sequence still finds no free
block, the most recently admitted request is preempted: its blocks are freed and it goes back to
the head of the queue, to be computed again (its full blocks likely still cached) when room
returns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from headrace.config import EngineConfig
from headrace.engine.block_manager import BlockManager
from headrace.engine.request import Request, RequestStatus

__all__ = ["PrefillChunk", "Scheduler", "SchedulerOutput"]


@dataclass(frozen=True)
class PrefillChunk:
    # The request whose tokens are being prefilled.
    request: Request
    # Tokens computed in this step.
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

    @property
    def requests(self) -> list[Request]:
        """Every request in the step, in batch order."""
        return self.decodes + [chunk.request for chunk in self.prefills]


class Scheduler:
    def __init__(self, config: EngineConfig, blocks: BlockManager) -> None:
        self.config = config
        self.blocks = blocks
        self.waiting: deque[Request] = deque()
        # In order of admission: the last is the first preempted.
        self.running: list[Request] = []
        # Preemptions since the start.
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def schedule(self) -> SchedulerOutput:
        decodes = self._schedule_decodes()
        budget = self.config.max_num_batched_tokens - len(decodes)
        prefills: list[PrefillChunk] = []
        for request in self.running:
            if request.is_prefilling and budget > 0:
                prefills.append(self._chunk(request, budget))
                budget -= prefills[-1].num_tokens
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            if _waits_for_leader(request):
                break
            if not self.blocks.admit(request, keep_watermark=bool(self.running)):
                break
            self.waiting.popleft()
            request.leader = None
            if request.num_preemptions == 0:
                request.num_cached_tokens = request.num_computed_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            prefills.append(self._chunk(request, budget))
            budget -= prefills[-1].num_tokens
        return SchedulerOutput(decodes=decodes, prefills=prefills)

    def finish(self, request: Request) -> None:
        """Take a finished or aborted request out, freeing its blocks."""
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
            self.blocks.free(request)
        elif request.status is RequestStatus.WAITING:
            self.waiting.remove(request)
        request.status = RequestStatus.FINISHED

    def _schedule_decodes(self) -> list[Request]:
        """The running sequences that decode this step, each with room for its next token."""
        decodes: list[Request] = []
        for request in list(self.running):
            if request.status is not RequestStatus.RUNNING or request.is_prefilling:
                continue  # preempted by an earlier one of this loop, or not decoding yet
            while not self.blocks.reserve_slot(request):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is request:
                    break
            else:
                decodes.append(request)
        return decodes

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.blocks.free(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        request.status = RequestStatus.WAITING
        self.waiting.appendleft(request)

    @staticmethod
    def _chunk(request: Request, budget: int) -> PrefillChunk:
        remaining = request.num_tokens - request.num_computed_tokens
        return PrefillChunk(request=request, num_tokens=min(remaining, budget))


def _waits_for_leader(request: Request) -> bool:
    """Whether the request's leader is still to compute the prompt they share."""
    leader = request.leader
    if leader is None or leader.status is RequestStatus.FINISHED:
        return False
    return leader.num_computed_tokens < len(leader.prompt_token_ids)
