"""Bounds on the kernels that CPU libraries compile and keep, one for every shape they meet.

oneDNN (every bfloat16 matmul) and PyTorch's bfloat16 flash attention on the CPU compile a
kernel for each new shape and keep it. A server meets every prompt length there is, so left
alone they grow the process without end: 500 prompt lengths up to 1,500 tokens took the flash
kernel's cache alone from 0.2 to 1.0 GiB. Steps and attention lengths are therefore rounded up
to a few sizes (`bucketed`), and oneDNN's caches are capped as well.
"""

from __future__ import annotations

import os

__all__ = ["ONEDNN_CACHE_CAPACITY", "SHAPE_BUCKET", "bound_onednn_caches", "bucketed"]

# Token counts that reach a per-shape kernel are rounded up to a multiple of this.
SHAPE_BUCKET = 16

# Entries in each of oneDNN's two caches of compiled kernels, one per matmul shape, where its
# default is 1024: a backstop, since bucketed steps (the decode sizes, then multiples of
# SHAPE_BUCKET up to the step's token budget) hold a few hundred shapes with the defaults.
ONEDNN_CACHE_CAPACITY = 256


def bucketed(n: int) -> int:
    """n rounded up to a multiple of SHAPE_BUCKET."""
    return -(-n // SHAPE_BUCKET) * SHAPE_BUCKET


def bound_onednn_caches() -> None:
    """Cap oneDNN's kernel caches (unless the environment sets them); call before any matmul.

    oneDNN reads ONEDNN_PRIMITIVE_CACHE_CAPACITY, and PyTorch's ideep LRU_CACHE_CAPACITY, when
    it first builds a kernel.
    """
    for variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(variable, str(ONEDNN_CACHE_CAPACITY))
