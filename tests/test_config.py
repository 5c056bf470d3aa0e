"""Configuration defaults that come from the machine."""

from __future__ import annotations

import os

import pytest

from headrace.config import EngineConfig, default_max_num_batched_tokens, default_max_num_seqs


@pytest.mark.parametrize(("cores", "expected"), [(1, 32), (2, 64), (4, 128), (16, 256)])
def test_max_num_seqs_defaults_to_32_per_usable_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)))
    assert default_max_num_seqs() == expected
    assert EngineConfig().max_num_seqs == expected


@pytest.mark.parametrize(("cores", "expected"), [(1, 1024), (2, 2048), (16, 8192)])
def test_the_step_budget_defaults_to_1024_tokens_per_usable_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)))
    assert default_max_num_batched_tokens() == expected
    assert EngineConfig().max_num_batched_tokens == expected
