"""headrace's own torch operators, for kernels that torch.compile must call rather than trace.

An operator is opaque to the compiler: it is called as it is, given tensors of the shapes its
`shape` function promises. They are defined through torch.library's plain API, where a call
costs a few microseconds, under half of what a @custom_op that mutates its arguments costs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["define_operator"]

_library = torch.library.Library("headrace", "DEF")  # type: ignore[no-untyped-call]


def define_operator(
    schema: str, kernel: Callable[..., torch.Tensor], shape: Callable[..., torch.Tensor]
) -> None:
    """Define torch.ops.headrace.<name> from "name(arguments) -> results".

    `kernel` computes it on every device; `shape` returns empty tensors shaped as its results,
    for tracing. Arguments it writes to are marked (a!) in the schema.
    """
    name = schema.split("(", 1)[0]
    _library.define(schema)  # type: ignore[no-untyped-call]
    _library.impl(name, kernel, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]
    torch.library.register_fake(f"headrace::{name}", shape, lib=_library)
