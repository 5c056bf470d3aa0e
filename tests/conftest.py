"""Fixtures shared across the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.model.source import resolve_model


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The real default model (SmolLM2-135M-Instruct GGUF), fetched once and cached."""
    return resolve_model(None).path
