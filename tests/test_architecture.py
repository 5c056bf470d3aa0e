"""The rooms of DESIGN.md import one way: api -> {metrics, batch, auth} -> serving -> {engine,
text}.

Everything may import the error tree, `headrace.errors`, which imports only the standard library.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "headrace"
# What every room may import: the error tree at the bottom.
BOTTOM = {"errors"}
# What each room may import from headrace, besides itself and BOTTOM.
ALLOWED = {
    "errors": set(),
    "config": set(),
    "model": {"config"},
    "text": {"model", "config"},
    "engine": {"model", "config"},
    "serving": {"engine", "text", "model", "config"},
    "batch": {"serving", "engine", "text", "model", "config"},
    "auth": {"config"},
    "metrics": {"serving", "engine", "text", "model", "config"},
    "api": {"metrics", "auth", "batch", "serving", "engine", "text", "model", "config"},
    "cli": {"api", "metrics", "auth", "batch", "serving", "engine", "text", "model", "config"},
    "__main__": {"cli"},
    "__init__": set(),
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports by absolute name; "." for a relative import."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module if node.module and node.level == 0 else ".")
    return modules


def headrace_imports(path: Path) -> set[str]:
    return {name.split(".")[1] for name in imported_modules(path) if name.startswith("headrace.")}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=str)
def test_imports_point_one_way(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    room = relative.parts[0].removesuffix(".py")
    assert room in ALLOWED, f"{room} is not a room of DESIGN.md"
    bottom = BOTTOM if room not in BOTTOM else set()
    wrong = headrace_imports(path) - ALLOWED[room] - bottom - {room}
    assert not wrong, f"{relative} imports {sorted(wrong)}"


def test_the_error_tree_imports_only_the_standard_library() -> None:
    tops = {name.partition(".")[0] or name for name in imported_modules(PACKAGE / "errors.py")}
    outside = tops - set(sys.stdlib_module_names) - {"__future__"}
    assert not outside, f"errors.py imports {sorted(outside)}"


def loaded_by(imports: str, modules: set[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded once it ran `import IMPORTS`."""
    code = f"import json, sys, {imports}; print(json.dumps(sorted({modules!r} & set(sys.modules))))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_key_commands_do_not_load_the_model_stack() -> None:
    """`headrace keys` needs the CLI, auth and the errors: no torch, transformers or FastAPI."""
    imports = "headrace.cli, headrace.auth, headrace.errors"
    assert loaded_by(imports, {"torch", "transformers", "fastapi"}) == []


def test_the_batch_room_does_not_load_the_model_stack_or_http() -> None:
    """Files and batches are SQLite and files: importing them loads no torch, nor FastAPI."""
    assert loaded_by("headrace.batch", {"torch", "transformers", "fastapi", "starlette"}) == []


def test_building_a_model_to_load_imports_no_compiler() -> None:
    """The loader builds the model on the meta device; an op there runs one of torch's Python
    decompositions, whose first call imports dynamo: over a second of a server's start."""
    imports = (
        "torch, tests.engine.factories as f, headrace.model.llama as m; "
        "torch.device('meta').__enter__(); m.LlamaForCausalLM(f.make_model_config())"
    )
    assert loaded_by(imports, {"torch._dynamo"}) == []


def test_the_engine_imports_no_compiler() -> None:
    """The compile thread imports TorchInductor and dynamo (over two seconds); serving must
    not wait for them."""
    imports = "headrace.cli.serve, headrace.api.app, headrace.serving.runtime"
    assert loaded_by(imports, {"torch._dynamo", "torch._inductor"}) == []
