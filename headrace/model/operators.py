"""headrace's own torch operators, for kernels that torch.compile must call rather than trace.

An operator is opaque to the compiler: it is called as it is, given tensors of the shapes its
`shape` function promises. They are defined through torch.library's plain API, where a call
costs a few microseconds, under half of what a @custom_op that mutates its arguments costs.
Those that operators.cpp implements for CPU tensors cost about 2 microseconds there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from headrace.model.native import cpu_operators

__all__ = ["define_operator"]

_library = torch.library.Library("headrace", "DEF")  # type: ignore[no-untyped-call]


def define_operator(
    schema: str,
    kernel: Callable[..., torch.Tensor],
    shape: Callable[..., torch.Tensor],
    *,
    in_cpp: bool = False,
) -> None:
    """Define torch.ops.headrace.<name> from "name(arguments) -> results".

    `kernel` computes it on every device; `shape` returns empty tensors shaped as its results,
    for tracing. Arguments it writes to are marked (a!) in the schema. With `in_cpp`,
    operators.cpp implements it for CPU tensors: the first call on CPU tensors loads that
    implementation, which then serves that call and every later one; `kernel` is left for
    other devices, for machines where it cannot be built, and for calls made while it builds
    (on a machine's first start).
    """
    name = schema.split("(", 1)[0]
    _library.define(schema)  # type: ignore[no-untyped-call]
    if in_cpp:
        kernel = _cpp_first(name, kernel)
    _library.impl(name, kernel, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    torch.library.register_fake(f"headrace::{name}", shape, lib=_library)


def _cpp_first(name: str, kernel: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def load_cpp_then_call(*args: object) -> torch.Tensor:
        first = args[0]
        if (
            isinstance(first, torch.Tensor)
            and first.device.type == "cpu"
            and cpu_operators(wait=False)
            and torch._C._dispatch_has_kernel_for_dispatch_key(f"headrace::{name}", "CPU")
        ):
            operator: Callable[..., torch.Tensor] = getattr(torch.ops.headrace, name)
            return operator(*args)  # now dispatched to the C++ implementation
        return kernel(*args)

    return load_cpp_then_call
