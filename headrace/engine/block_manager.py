"""The paged KV cache's bookkeeping: blocks, reference counts, block tables, prefix caching.

The cache is split into blocks of `block_size` token positions. A running request holds a
block table, the blocks its tokens sit in, in order. A block full of computed tokens is named
by a hash of its tokens and of every token before it, so a later request whose prompt starts
with the same tokens takes the same blocks instead of computing them again.

A block nobody references is free, but keeps what it holds: it stays findable by its hash until
its memory is handed out again. Free blocks are handed out least recently freed first, and
blocks that hold nothing findable before any that do.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

from headrace.engine.request import Request

__all__ = ["NULL_BLOCK", "BlockManager", "BlockPool", "block_hash"]

# Block 0 is never handed out: it pads block tables, and reads from it are masked.
NULL_BLOCK = 0


def block_hash(parent: int | None, tokens: Sequence[int]) -> int:
    """The name of a full block: its tokens, chained to the name of the block before it."""
    return hash((parent, tuple(tokens)))


class BlockPool:
    """Blocks, their reference counts, and the index of full blocks by hash."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"the KV cache needs at least 2 blocks, not {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._hashes: list[int | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        # Unreferenced blocks, next to be handed out first.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, num_blocks))

    @property
    def num_free(self) -> int:
        """Blocks that can be handed out, cached ones included."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        """Blocks some request references."""
        return self.num_blocks - 1 - len(self._free)

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def cached(self, hashes: Sequence[int]) -> list[int]:
        """The blocks holding the longest run of these hashes from the first; none are taken."""
        blocks: list[int] = []
        for h in hashes:
            block = self._by_hash.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def num_free_among(self, blocks: Sequence[int]) -> int:
        return sum(1 for block in blocks if block in self._free)

    def take(self, blocks: Sequence[int]) -> None:
        """Reference blocks found by `cached`."""
        for block in blocks:
            if self._ref_counts[block] == 0:
                del self._free[block]
            self._ref_counts[block] += 1

    def allocate(self, count: int) -> list[int]:
        """Hand out `count` fresh blocks, forgetting what the reused ones held."""
        assert count <= len(self._free), f"asked for {count} blocks, {len(self._free)} free"
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            old_hash = self._hashes[block]
            if old_hash is not None:
                self._hashes[block] = None
                if self._by_hash.get(old_hash) == block:
                    del self._by_hash[old_hash]
            self._ref_counts[block] = 1
            blocks.append(block)
        return blocks

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference from each block; unreferenced ones become free."""
        # Reversed, so a sequence's last blocks (the least likely to be shared) go first.
        for block in reversed(blocks):
            assert self._ref_counts[block] > 0, f"block {block} released twice"
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                self._free[block] = None
                if self._hashes[block] is None:
                    self._free.move_to_end(block, last=False)

    def register(self, block: int, h: int) -> None:
        """Make a full block findable by its hash (the first block of a hash keeps it)."""
        self._hashes[block] = h
        self._by_hash.setdefault(h, block)


class BlockManager:
    """Gives requests the blocks their tokens need, reusing cached prefixes."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, not {block_size}")
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        # Blocks kept back from admission, so running requests have room to decode.
        self.watermark = max(1, num_blocks // 100)

    @property
    def usage(self) -> float:
        """Fraction of the cache's blocks referenced by requests."""
        return self.pool.num_used / (self.pool.num_blocks - 1)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def admit(self, request: Request, *, keep_watermark: bool) -> bool:
        """Give a waiting request blocks for all its tokens, cached ones first; False if short.

        At least its last token is left to compute, since its logits pick the next token. A
        request still to score its prompt computes all of it: cached blocks hold no logits.
        """
        cached, shortfall = self._plan(request, keep_watermark=keep_watermark)
        if shortfall > 0:
            return False
        self.pool.take(cached)
        request.block_ids = cached + self.pool.allocate(
            self.blocks_for(request.num_tokens) - len(cached)
        )
        request.num_hashed_blocks = len(cached)
        request.num_computed_tokens = len(cached) * self.block_size
        return True

    def can_admit(
        self, request: Request, *, keep_watermark: bool, freeing: Sequence[Request] = ()
    ) -> bool:
        """Whether `admit` would give the request its blocks once `freeing`'s were freed."""
        cached, shortfall = self._plan(request, keep_watermark=keep_watermark)
        held = Counter(block for other in freeing for block in other.block_ids)
        # Blocks no one else holds; a cached one the request would take is no gain.
        freed = {block for block, refs in held.items() if self.pool.ref_count(block) == refs}
        return len(freed - set(cached)) >= shortfall

    def _plan(self, request: Request, *, keep_watermark: bool) -> tuple[list[int], int]:
        """The cached blocks admitting the request would take, and how many more blocks it
        needs than are free (0 or less: none)."""
        num_tokens = request.num_tokens
        cached = []
        if not request.needs_prompt_logprobs:
            cached = self.pool.cached(self._hashes(request, (num_tokens - 1) // self.block_size))
        needed = self.blocks_for(num_tokens) - len(cached)
        available = self.pool.num_free - self.pool.num_free_among(cached)
        if keep_watermark:
            available -= self.watermark
        return cached, needed - available

    def reserve_slot(self, request: Request) -> bool:
        """Make room for the token a running request computes next; False if no block is free."""
        if request.num_computed_tokens < len(request.block_ids) * self.block_size:
            return True
        if self.pool.num_free == 0:
            return False
        request.block_ids += self.pool.allocate(1)
        return True

    def cache_full_blocks(self, request: Request) -> None:
        """Make the request's newly filled blocks findable by later requests."""
        if not self.enable_prefix_caching:
            return
        num_full = request.num_computed_tokens // self.block_size
        first_new = request.num_hashed_blocks
        if num_full == first_new:
            return  # most steps: no block filled up
        hashes = self._hashes(request, num_full)
        for block, h in zip(request.block_ids[first_new:num_full], hashes[first_new:], strict=True):
            self.pool.register(block, h)
        request.num_hashed_blocks = num_full

    def free(self, request: Request) -> None:
        self.pool.release(request.block_ids)
        request.block_ids = []
        request.num_hashed_blocks = 0

    def _hashes(self, request: Request, num_blocks: int) -> list[int]:
        """The hashes of the request's first `num_blocks` blocks, extending those known."""
        if not self.enable_prefix_caching:
            return []
        hashes = request.block_hashes
        size = self.block_size
        while len(hashes) < num_blocks:
            start = len(hashes) * size
            parent = hashes[-1] if hashes else None
            hashes.append(block_hash(parent, request.token_ids(start, start + size)))
        return hashes[:num_blocks]
