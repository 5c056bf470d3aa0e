"""Where the model runs and in what precision, resolved from the configuration."""

from __future__ import annotations

import os

import torch

from headrace.config import Device, Dtype

__all__ = ["bound_onednn_caches", "cpu_has_native_bfloat16", "resolve_device", "resolve_dtype"]

# Entries in each of oneDNN's two caches of compiled kernels, one per matmul shape, where its
# default is 1024. A server sees a new shape with every prefill chunk length; at 1024 each
# cache grew the process by hundreds of MiB over the first thousand requests, at 256 the
# growth levels off early, and the decode shapes of up to 32 sequences (5 matmuls each) fit.
ONEDNN_CACHE_CAPACITY = 256


def resolve_device(device: Device) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Dtype, device: torch.device) -> torch.dtype:
    """The dtype asked for; "auto" is bfloat16 on CUDA and AVX512-BF16 CPUs, else float32."""
    if dtype == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16), through oneDNN."""
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return mkldnn and torch.cpu._is_avx512_bf16_supported()


def bound_onednn_caches() -> None:
    """Cap oneDNN's kernel caches (unless the environment sets them); call before any matmul.

    oneDNN reads ONEDNN_PRIMITIVE_CACHE_CAPACITY, and PyTorch's ideep LRU_CACHE_CAPACITY, when
    it first builds a kernel.
    """
    for variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(variable, str(ONEDNN_CACHE_CAPACITY))
