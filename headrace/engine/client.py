"""The face the engine shows to the serving layer (and the shape a fake engine takes in tests)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from headrace.engine.outputs import EngineStats, Priority, SamplingParams, TokenOutput

__all__ = ["EngineClient"]


class EngineClient(Protocol):
    # Most tokens, prompt and completion together, one sequence may hold.
    max_model_len: int
    # Token ids the model scores: 0 to vocab_size - 1.
    vocab_size: int
    # Token positions per KV-cache block.
    block_size: int
    # Blocks of the KV cache requests may hold (the null block apart).
    kv_cache_blocks: int

    def start(self) -> None:
        """Begin stepping; called from the event loop that will consume the outputs."""
        ...

    def shutdown(self) -> None:
        """Stop stepping."""
        ...

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        after: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> AsyncGenerator[TokenOutput, None]:
        """Queue a request and yield its tokens as steps produce them.

        `after`: a request queued earlier with the same prompt (another sample of it); this one
        starts once that one's prompt is computed, and takes it from the prefix cache.

        `priority`: Priority.BATCH runs on the capacity interactive requests leave idle, and is
        preempted (to be computed again, its tokens unchanged) before any of them.

        The last output carries a finish_reason. Closing the generator early (a client that went
        away) aborts the request; after `abort` the generator yields nothing more.
        """
        ...

    def abort(self, request_id: str) -> None:
        """Drop the request and free its state before the next engine step."""
        ...

    def abort_all(self) -> None:
        """End every request now: each stream's last output has finish_reason "abort".

        A server that stops does this; its clients may retry elsewhere.
        """
        ...

    def stats(self) -> EngineStats:
        """Running and waiting request counts (batch ones also apart), as of the last step."""
        ...
