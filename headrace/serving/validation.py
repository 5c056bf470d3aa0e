"""Pydantic's validation errors, told as OpenAI tells them: one InvalidRequestError naming the
first parameter at fault with OpenAI's code ("integer_above_max_value", "empty_array", ...)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from headrace.errors import InvalidRequestError, invalid_value, missing_parameter

__all__ = ["invalid_request_from_validation"]

# Pydantic names the union member it tried inside `loc` ("str", "list[TextPart]",
# "function-after[...]", model class names); request fields are snake_case identifiers.
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_field(part: int | str) -> bool:
    return isinstance(part, int) or (_FIELD.fullmatch(part) is not None and part not in _TYPE_NAMES)


def _path(loc: Iterable[int | str]) -> tuple[int | str, ...]:
    return tuple(part for part in loc if _is_field(part))


# OpenAI's error codes for the checks pydantic makes, by pydantic's error type.
_CODES = {
    "int_from_float": "invalid_type",
    "literal_error": "invalid_value",
    "string_pattern_mismatch": "invalid_value",
    "too_short": "array_below_min_length",
    "too_long": "array_above_max_length",
    "string_too_short": "string_below_min_length",
    "string_too_long": "string_above_max_length",
}
# Lengths below the minimum, when the value is empty.
_EMPTY = {"too_short": "empty_array", "string_too_short": "empty_string"}
# Bounds, and the side of them the value fell on.
_BOUNDS = {
    "greater_than": "below_min_value",
    "greater_than_equal": "below_min_value",
    "less_than": "above_max_value",
    "less_than_equal": "above_max_value",
}


def _code(error: Mapping[str, Any]) -> str | None:
    """OpenAI's code for a pydantic error: "invalid_type", "integer_above_max_value"..."""
    kind = error["type"]
    if kind.endswith("_type"):
        return "invalid_type"
    if kind in _EMPTY and not error["input"]:
        return _EMPTY[kind]
    if kind in _BOUNDS:
        # pydantic gives the bound the field's type, which tells integers from decimals.
        (bound,) = error["ctx"].values()
        return f"{'decimal' if isinstance(bound, float) else 'integer'}_{_BOUNDS[kind]}"
    return _CODES.get(kind)


def invalid_request_from_validation(errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """One InvalidRequestError from pydantic's error list (`ValidationError.errors()`).

    Reports the first failing parameter. When it failed every member of a union, the member
    that got furthest names the problem (a list of parts with a bad part beats "not a string").
    """
    first = errors[0]
    kind = first["type"]
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request "
            f"({first['ctx']['error']}). The API expects a JSON object."
        )
    if kind == "model_type" and not first["loc"]:
        return InvalidRequestError("The request body must be a JSON object.")
    prefix = _path(first["loc"])
    related = [error for error in errors if _path(error["loc"])[: len(prefix)] == prefix]
    deepest = max(related, key=lambda error: len(_path(error["loc"])))
    path = _path(deepest["loc"])
    if not path:
        return InvalidRequestError(f"Invalid request: {deepest['msg']}.")
    param = ".".join(str(part) for part in path)
    if deepest["type"] == "missing":
        return missing_parameter(param)
    at_path = [error for error in related if _path(error["loc"]) == path]
    # A union member of the right type that failed a finer check says more than the others.
    fitting = [error for error in at_path if _code(error) != "invalid_type"] or at_path
    reasons = dict.fromkeys(error["msg"] for error in fitting)
    return invalid_value(param, "; or ".join(reasons), code=_code(fitting[0]))
