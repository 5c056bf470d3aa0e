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

Requests of a priority (`Priority`) go before those of the next: interactive prefills take the
budget first, batch requests are admitted only once no interactive one waits, and a batch
request is always the one preempted while one runs, also to admit an interactive request the
cache or `max_num_seqs` has no room for. Batch work never preempts interactive work. A step
that computes an interactive prompt runs interactive work alone (the batch decodes sit it out,
their cache kept), so a chat's first token comes as fast as on an idle engine.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from headrace.config import EngineConfig
from headrace.engine.block_manager import BlockManager
from headrace.engine.outputs import Priority
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
        # One queue per priority, each first come, first served (preempted ones at the head).
        self._queues: dict[Priority, deque[Request]] = {priority: deque() for priority in Priority}
        # In order of admission: of the least urgent priority running, the last is preempted first.
        self.running: list[Request] = []
        # Preemptions since the start.
        self.num_preemptions = 0

    @property
    def waiting(self) -> list[Request]:
        """The waiting requests in the order they are admitted: by priority, then queue order."""
        return [request for queue in self._queues.values() for request in queue]

    @property
    def has_work(self) -> bool:
        return bool(self.running) or any(self._queues.values())

    def num_running(self, priority: Priority) -> int:
        return sum(1 for request in self.running if request.priority is priority)

    def num_waiting(self, priority: Priority | None = None) -> int:
        """Requests waiting at `priority`; None: at any."""
        if priority is None:
            return sum(len(queue) for queue in self._queues.values())
        return len(self._queues[priority])

    def add(self, request: Request) -> None:
        self._queues[request.priority].append(request)

    def schedule(self) -> SchedulerOutput:
        decodes = self._schedule_decodes()
        budget = self.config.max_num_batched_tokens - len(decodes)
        prefills: list[PrefillChunk] = []
        admitting = True
        for priority in Priority:
            if prefills:  # a more urgent prompt is computed: this step is its priority's alone
                decodes = [request for request in decodes if request.priority < priority]
                break
            for request in self.running:
                if request.priority is priority and request.is_prefilling and budget > 0:
                    prefills.append(self._chunk(request, budget))
                    budget -= prefills[-1].num_tokens
            queue = self._queues[priority]
            while admitting and queue and budget > 0:
                request = queue[0]
                num_decodes = len(decodes)
                if _waits_for_leader(request) or not self._admit(request, decodes):
                    break
                budget += num_decodes - len(decodes)  # those preempted for it decode no more
                queue.popleft()
                request.leader = None
                if request.num_preemptions == 0:  # its first admission
                    request.num_cached_tokens = request.num_computed_tokens
                    request.scheduled_at = time.monotonic()
                request.status = RequestStatus.RUNNING
                self.running.append(request)
                prefills.append(self._chunk(request, budget))
                budget -= prefills[-1].num_tokens
            # Less urgent requests are not admitted while a more urgent one waits.
            admitting = admitting and not queue
        return SchedulerOutput(decodes=decodes, prefills=prefills)

    def finish(self, request: Request) -> None:
        """Take a finished or aborted request out, freeing its blocks."""
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
            self.blocks.free(request)
        elif request.status is RequestStatus.WAITING:
            self._queues[request.priority].remove(request)
        request.status = RequestStatus.FINISHED

    def _schedule_decodes(self) -> list[Request]:
        """The running sequences that decode this step, each with room for its next token.

        By priority, then in order of admission: the request preempted to make room is always
        one not yet scheduled (the last of the least urgent priority running), or the one
        asking itself.
        """
        decodes: list[Request] = []
        for request in sorted(self.running, key=lambda r: r.priority):  # stable: admission order
            if request.status is not RequestStatus.RUNNING or request.is_prefilling:
                continue  # preempted by an earlier one of this loop, or not decoding yet
            while not self.blocks.reserve_slot(request):
                victim = self._next_victim()
                self._preempt(victim)
                if victim is request:
                    break
            else:
                decodes.append(request)
        return decodes

    def _admit(self, request: Request, decodes: list[Request]) -> bool:
        """Give a waiting request blocks and a place in the batch; when the cache or
        `max_num_seqs` is short, preempt less urgent requests for them, if that is enough."""
        if len(self.running) < self.config.max_num_seqs and self.blocks.admit(
            request, keep_watermark=bool(self.running)
        ):
            return True
        # Least urgent last, then in order of admission: popped from the end.
        victims = sorted(
            (other for other in self.running if other.priority > request.priority),
            key=lambda other: other.priority,
        )
        enough_seats = len(self.running) - len(victims) < self.config.max_num_seqs
        enough_blocks = self.blocks.can_admit(
            request, keep_watermark=bool(self.running), freeing=victims
        )
        if not (enough_seats and enough_blocks):
            return False  # preempting them all would not make room: preempt none
        while victims:
            victim = victims.pop()
            self._preempt(victim)
            if victim in decodes:
                decodes.remove(victim)  # its slot went with its blocks
            if len(self.running) < self.config.max_num_seqs and self.blocks.admit(
                request, keep_watermark=bool(self.running)
            ):
                return True
        raise AssertionError("preempting every less urgent request did not make room")

    def _next_victim(self) -> Request:
        """The running request preempted next: the last admitted of the least urgent priority."""
        least_urgent = max(request.priority for request in self.running)
        return next(r for r in reversed(self.running) if r.priority is least_urgent)

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.blocks.free(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        request.status = RequestStatus.WAITING
        self._queues[request.priority].appendleft(request)

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
