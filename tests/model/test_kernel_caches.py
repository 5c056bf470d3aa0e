from __future__ import annotations

import os

import pytest

from headrace.model import kernel_caches
from headrace.model.kernel_caches import SHAPE_BUCKET, bucketed


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, SHAPE_BUCKET), (SHAPE_BUCKET, SHAPE_BUCKET), (SHAPE_BUCKET + 1, 2 * SHAPE_BUCKET)],
)
def test_bucketed_rounds_up_to_a_multiple_of_the_bucket(n: int, expected: int) -> None:
    assert bucketed(n) == expected


def test_onednn_caches_are_bounded_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "")  # restored or removed afterwards
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "64")
    kernel_caches.bound_onednn_caches()
    capacity = str(kernel_caches.ONEDNN_CACHE_CAPACITY)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == capacity
    assert os.environ["LRU_CACHE_CAPACITY"] == "64"
