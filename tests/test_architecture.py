"""The rooms of DESIGN.md import one way: api -> {batch, auth} -> serving -> {engine, text}."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "headrace"
# What each room may import from headrace, besides itself.
ALLOWED = {
    "config": set(),
    "model": {"config"},
    "text": {"model", "config"},
    "engine": {"model", "config"},
    "serving": {"engine", "text", "model", "config"},
    "batch": {"serving", "engine", "text", "model", "config"},
    "auth": {"serving", "config"},
    "api": {"auth", "batch", "serving", "engine", "text", "model", "config"},
    "cli": {"api", "auth", "batch", "serving", "engine", "text", "model", "config"},
    "__main__": {"cli"},
    "__init__": set(),
}


def headrace_imports(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        rooms |= {name.split(".")[1] for name in names if name.startswith("headrace.")}
    return rooms


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=str)
def test_imports_point_one_way(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    room = relative.parts[0].removesuffix(".py")
    assert room in ALLOWED, f"{room} is not a room of DESIGN.md"
    wrong = headrace_imports(path) - ALLOWED[room] - {room}
    assert not wrong, f"{relative} imports {sorted(wrong)}"
