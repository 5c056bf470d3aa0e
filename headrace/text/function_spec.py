"""A function the model may call, as a tool-call grammar needs it: a name and an arguments schema.

Serving parses a request's `tools` (and checks them: names, schemas) and hands the grammar these;
the grammar writes each call as `{"name": <name>, "arguments": <object valid against
parameters>}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FunctionSpec"]


@dataclass(frozen=True)
class FunctionSpec:
    # Name the model calls it by; unique among the functions of one grammar.
    name: str
    # JSON Schema of its arguments object (an empty object's schema when it takes none).
    parameters: Mapping[str, Any]
    # Every keyword of `parameters` must be enforced, or the grammar is refused (the client's
    # `strict: true`); otherwise keywords a grammar cannot enforce are ignored.
    strict: bool = False
