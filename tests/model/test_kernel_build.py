"""On a machine's first start the C++ kernels build on a thread of their own: until they are
built the operators run on torch's, then on the C++ (each case in a process of its own, since a
process that has loaded the C++ operators keeps them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from headrace.model import native

SCRIPT = """
import logging
logging.basicConfig(level=logging.INFO)
import torch
from headrace.model import attention, native  # attention defines decode_attention

def decode():
    k_cache, v_cache = torch.zeros(2, 4, 4, 1, 16).unbind(0)
    q, k, v = torch.ones(3, 1, 1, 16).unbind(0)
    args = (torch.tensor([4]), torch.tensor([[1]]), torch.tensor([1]))  # block 1, position 0
    return torch.ops.headrace.decode_attention(q, k, v, k_cache, v_cache, *args)

on_cpu = lambda: torch._C._dispatch_has_kernel_for_dispatch_key("headrace::decode_attention", "CPU")
expected = torch.ones(1, 1, 16)
assert torch.equal(decode(), expected)  # the first call: at once, whatever the cache holds
print("first call in C++:", on_cpu())
native._built_in_background().result(timeout=300)
assert torch.equal(decode(), expected)
assert native.cpu_operators(wait=False) and on_cpu()
"""


def _run(cache: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True
    )


def _kernels(tmp_path: Path) -> Path:
    """A copy of this machine's kernel cache (built here first if need be)."""
    assert native.cpu_operators(), "the C++ operators did not build"
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    shutil.copytree(home / "headrace" / "kernels", tmp_path / "headrace" / "kernels")
    return tmp_path / "headrace" / "kernels"


def test_a_library_the_cache_lacks_builds_while_torch_serves(tmp_path: Path) -> None:
    kernels = _kernels(tmp_path)
    for library in kernels.glob("paged_attention-*.so"):
        library.unlink()
    run = _run(tmp_path)
    assert run.returncode == 0, run.stderr
    assert "first call in C++: False" in run.stdout
    assert "building headrace's C++ kernels for this machine in the background" in run.stderr
    assert list(kernels.glob("paged_attention-*.so"))


def test_with_every_library_cached_the_first_call_is_in_cpp(tmp_path: Path) -> None:
    _kernels(tmp_path)
    run = _run(tmp_path)
    assert run.returncode == 0, run.stderr
    assert "first call in C++: True" in run.stdout
    assert "building" not in run.stderr
