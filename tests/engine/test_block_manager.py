"""Blocks, reference counts, prefix hashing and eviction, without a model."""

from __future__ import annotations

import pytest

from headrace.engine.block_manager import NULL_BLOCK, BlockManager, BlockPool, block_hash
from headrace.engine.request import Request
from tests.engine.factories import make_params


def request(tokens: list[int], request_id: str = "r") -> Request:
    return Request(request_id, tokens, make_params())


def computed(req: Request, manager: BlockManager) -> None:
    """Mark every token but the last computed, as a finished prefill leaves it."""
    req.num_computed_tokens = req.num_tokens - 1
    manager.cache_full_blocks(req)


def test_the_null_block_is_never_handed_out() -> None:
    pool = BlockPool(4)
    assert pool.num_free == 3
    assert sorted(pool.allocate(3)) == [1, 2, 3]
    assert pool.num_free == 0 and NULL_BLOCK == 0


def test_too_small_a_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 blocks"):
        BlockPool(1)


def test_release_counts_references_down() -> None:
    pool = BlockPool(4)
    [block] = pool.allocate(1)
    pool.take([block])
    pool.release([block])
    assert pool.ref_count(block) == 1 and pool.num_free == 2
    pool.release([block])
    assert pool.ref_count(block) == 0 and pool.num_free == 3


def test_releasing_a_free_block_is_a_bug() -> None:
    pool = BlockPool(3)
    blocks = pool.allocate(1)
    pool.release(blocks)
    with pytest.raises(AssertionError, match="released twice"):
        pool.release(blocks)


def test_hash_chains_the_prefix() -> None:
    first = block_hash(None, [1, 2])
    assert block_hash(first, [3, 4]) != block_hash(block_hash(None, [9, 9]), [3, 4])
    assert block_hash(first, [3, 4]) == block_hash(block_hash(None, [1, 2]), [3, 4])


def test_admission_gives_blocks_for_every_token() -> None:
    manager = BlockManager(16, 4, enable_prefix_caching=True)
    req = request(list(range(10)))
    assert manager.admit(req, keep_watermark=False)
    assert len(req.block_ids) == 3 and req.num_computed_tokens == 0
    assert manager.pool.num_used == 3


def test_a_shared_prefix_is_found_and_its_blocks_shared() -> None:
    manager = BlockManager(16, 4, enable_prefix_caching=True)
    first = request(list(range(10)), "first")
    manager.admit(first, keep_watermark=False)
    computed(first, manager)  # 9 tokens computed: blocks 0 and 1 are full

    second = request([*list(range(8)), 50, 51, 52], "second")
    assert manager.admit(second, keep_watermark=False)
    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.block_ids[2] != first.block_ids[2]
    assert second.num_computed_tokens == 8
    assert manager.pool.ref_count(first.block_ids[0]) == 2


def test_a_different_first_block_shares_nothing_after_it() -> None:
    manager = BlockManager(16, 4, enable_prefix_caching=True)
    first = request(list(range(10)))
    manager.admit(first, keep_watermark=False)
    computed(first, manager)
    second = request([99, 1, 2, 3, *list(range(4, 10))])
    manager.admit(second, keep_watermark=False)
    assert second.num_computed_tokens == 0
    assert not set(second.block_ids) & set(first.block_ids)


def test_the_last_token_is_always_computed() -> None:
    manager = BlockManager(16, 4, enable_prefix_caching=True)
    first = request(list(range(9)))
    manager.admit(first, keep_watermark=False)
    first.num_computed_tokens = 9
    manager.cache_full_blocks(first)
    same = request(list(range(8)))  # both its blocks are cached, but it needs logits
    manager.admit(same, keep_watermark=False)
    assert same.num_computed_tokens == 4


def test_freed_blocks_stay_findable_until_reused() -> None:
    manager = BlockManager(6, 4, enable_prefix_caching=True)
    first = request(list(range(9)))
    manager.admit(first, keep_watermark=False)
    computed(first, manager)
    manager.free(first)
    assert manager.pool.num_used == 0

    again = request(list(range(9)))
    manager.admit(again, keep_watermark=False)
    assert again.num_computed_tokens == 8


def test_eviction_takes_unnamed_blocks_then_the_least_recently_freed() -> None:
    manager = BlockManager(9, 4, enable_prefix_caching=True)  # 8 usable blocks
    old, new = request(list(range(9)), "old"), request(list(range(100, 109)), "new")
    for req in (old, new):
        manager.admit(req, keep_watermark=False)
        computed(req, manager)  # each holds 2 full blocks and a partial one
    old_blocks, new_blocks = list(old.block_ids), list(new.block_ids)
    never_used = {7, 8}
    manager.free(old)
    manager.free(new)

    taker = request(list(range(200, 220)), "taker")  # 5 blocks
    manager.admit(taker, keep_watermark=False)
    partial = {old_blocks[2], new_blocks[2]}
    assert set(taker.block_ids) == partial | never_used | {old_blocks[1]}

    probe = request(list(range(100, 109)), "probe")
    manager.admit(probe, keep_watermark=False)
    assert probe.block_ids[:2] == new_blocks[:2] and probe.num_computed_tokens == 8
    assert probe.block_ids[2] == old_blocks[0]  # the last free block, evicted


def test_admission_fails_cleanly_when_blocks_run_short() -> None:
    manager = BlockManager(4, 4, enable_prefix_caching=True)
    big = request(list(range(20)))
    assert not manager.admit(big, keep_watermark=False)
    assert big.block_ids == [] and manager.pool.num_used == 0


def test_the_watermark_holds_blocks_back_from_admission() -> None:
    manager = BlockManager(4, 4, enable_prefix_caching=True)  # 3 usable, watermark 1
    req = request(list(range(12)))
    assert not manager.admit(req, keep_watermark=True)
    assert manager.admit(req, keep_watermark=False)


def test_reserve_slot_adds_a_block_at_each_boundary() -> None:
    manager = BlockManager(8, 4, enable_prefix_caching=True)
    req = request(list(range(4)))
    manager.admit(req, keep_watermark=False)
    req.num_computed_tokens = 3
    assert manager.reserve_slot(req) and len(req.block_ids) == 1  # position 3 fits
    req.num_computed_tokens = 4
    assert manager.reserve_slot(req) and len(req.block_ids) == 2  # position 4 needs a block


def test_reserve_slot_reports_an_empty_pool() -> None:
    manager = BlockManager(2, 4, enable_prefix_caching=True)
    req = request(list(range(4)))
    manager.admit(req, keep_watermark=False)
    req.num_computed_tokens = 4
    assert not manager.reserve_slot(req)


def test_without_prefix_caching_nothing_is_shared() -> None:
    manager = BlockManager(16, 4, enable_prefix_caching=False)
    first = request(list(range(10)))
    manager.admit(first, keep_watermark=False)
    computed(first, manager)
    second = request(list(range(10)))
    manager.admit(second, keep_watermark=False)
    assert second.num_computed_tokens == 0
    assert not set(second.block_ids) & set(first.block_ids)


def test_usage_is_the_fraction_of_blocks_held() -> None:
    manager = BlockManager(5, 4, enable_prefix_caching=True)
    req = request(list(range(8)))
    manager.admit(req, keep_watermark=False)
    assert manager.usage == 0.5
    manager.free(req)
    assert manager.usage == 0.0
