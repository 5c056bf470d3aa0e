"""The snippet files are the guide's own text: line for line, indentation aside."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
GUIDE = HERE.parent / "spec" / "streaming-guide.txt"
SNIPPETS = sorted([*HERE.glob("snippets/*"), *HERE.glob("node/*.mjs")])


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_every_snippet_of_the_guide_is_here() -> None:
    assert len(SNIPPETS) == 8  # five Python, two Node.js, one curl


@pytest.mark.parametrize("path", SNIPPETS, ids=lambda p: p.name)
def test_snippet_is_verbatim(path: Path) -> None:
    guide = stripped_lines(GUIDE.read_text())
    snippet = stripped_lines(path.read_text())
    assert "" not in snippet, "the guide's snippets have no blank lines"
    starts = [i for i, line in enumerate(guide) if line == snippet[0]]
    assert any(guide[i : i + len(snippet)] == snippet for i in starts)
