"""Where the model runs and in what precision, resolved from the configuration."""

from __future__ import annotations

import os

import torch

from headrace.config import Device, Dtype

__all__ = ["cpu_has_native_bfloat16", "dtype_reason", "resolve_device", "resolve_dtype"]


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


def dtype_reason(dtype: Dtype, device: torch.device) -> str:
    """Why `dtype` on `device` resolves as it does, for the start log."""
    if dtype != "auto":
        return "as asked"
    if device.type == "cuda":
        return "auto: CUDA computes in bfloat16"
    isa = torch.backends.cpu.get_cpu_capability()
    if cpu_has_native_bfloat16():
        return f"auto: this CPU multiplies bfloat16 natively (AVX512-BF16; torch's kernels: {isa})"
    return (
        f"auto: this CPU has no native bfloat16 for torch and oneDNN (their kernels: {isa}), "
        "where bfloat16 matmuls run emulated, slower than float32"
    )


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16) through oneDNN, and neither
    ATEN_CPU_CAPABILITY nor ONEDNN_MAX_CPU_ISA holds torch below AVX-512."""
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return (
        mkldnn
        and torch.cpu._is_avx512_bf16_supported()
        and torch.backends.cpu.get_cpu_capability() == "AVX512"
        and (onednn_cap == "ALL" or onednn_cap.startswith(("AVX512", "AVX10", "AMX")))
    )
