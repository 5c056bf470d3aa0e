"""Configuration defaults that come from the machine, and what configuration refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headrace.config import (
    EngineConfig,
    ModelConfig,
    ServerConfig,
    default_data_dir,
    default_max_num_batched_tokens,
    default_max_num_seqs,
)


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


@pytest.mark.parametrize("setting", ["auto", "none", "/models/x/generation_config.json", "cfg"])
def test_generation_config_is_auto_none_or_a_path(setting: str) -> None:
    assert ModelConfig(generation_config=setting).generation_config == setting
    assert ModelConfig().generation_config == "auto"


@pytest.mark.parametrize("setting", ["", "  "])
def test_an_empty_generation_config_is_refused(setting: str) -> None:
    with pytest.raises(ValueError, match="generation_config must be auto, none or a path"):
        ModelConfig(generation_config=setting)


def test_the_data_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "headrace"
    assert ServerConfig().data_dir == tmp_path / "headrace"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == Path.home() / ".local" / "share" / "headrace"


def test_the_file_size_limit() -> None:
    assert ServerConfig().max_file_bytes == 200 * 2**20
    with pytest.raises(ValueError, match="max_file_bytes must be positive, not 0"):
        ServerConfig(max_file_bytes=0)
