"""One tool call's JSON object, read as it is generated: the name, then the arguments' text.

Every format's calls go through here. The object is `{"name": <string>, "arguments": <object>}`
("parameters" is accepted for "arguments", and "id" and "type" keys are skipped); the keys may come
in any order. The name is reported once its string is complete. The arguments' text is reported
as it arrives, exactly as generated, but never before the name: arguments that come first are
held until the name is known. In bare mode (Mistral's `name[ARGS]{...}`) the object is itself the
arguments, under a name known from the start.

Before the name is known the text may still turn out not to be a call (it is not an object, has
another key first, or closes without a name): the scanner then reports it rejected, and the caller
gives the text back as content. Once the name is out the call stands: broken syntax after it just
ends the call. Arguments that are a JSON string holding an object are unwrapped; other
non-object arguments, or none at all, become "{}".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from headrace.text.json_scanner import JSON_WHITESPACE, JsonScanner

__all__ = ["ScanResult", "ToolCallScanner"]

# Keys allowed before the name that are skipped (Mistral's call "id", a call's "type").
_SKIPPED_KEYS = frozenset({"id", "type"})
# Keys that hold the arguments.
_ARGUMENT_KEYS = frozenset({"arguments", "parameters"})


@dataclass(frozen=True)
class ScanResult:
    """What one piece of text did to the call object."""

    # Characters of the piece consumed; the rest belongs to whatever follows the object.
    consumed: int
    # The function's name, when it became known in this piece; else None.
    name: str | None
    # Arguments text made final by this piece, to be sent after the name; "" if none.
    arguments: str
    # The call is over: its object closed (or, once the name was out, its syntax broke).
    done: bool
    # The text is not a tool call; `consumed` covers the part of the piece that was read as one.
    rejected: bool


class ToolCallScanner:
    """Reads one call object from text fed in pieces; see the module docstring."""

    def __init__(self, bare_name: str | None = None) -> None:
        # In bare mode, the name the arguments object belongs to.
        self._bare_name = bare_name
        # Where the object is: open, key_start, key, colon, value_start, value, after_value, end.
        self._state = "open"
        # The function name, once known (reported then).
        self._name: str | None = None
        # The arguments value: "none" yet, "reading", or "whole" (a second one is skipped).
        self._arguments = "none"
        # The key whose value is being read.
        self._key = ""
        # What the value being read is for: "name", "arguments", "raw_arguments" or "skip".
        self._role = ""
        # Finds the end of the key or value being read.
        self._value = JsonScanner()
        # Text of the key, name or raw arguments value read so far.
        self._raw = ""
        # Arguments text that arrived before the name.
        self._early: list[str] = []
        # The piece being fed: the name and arguments it completed, and whether it rejected.
        self._new_name: str | None = None
        self._new_arguments: list[str] = []
        self._rejected = False

    @property
    def name(self) -> str | None:
        """The function's name, once known."""
        return self._name

    @property
    def arguments_complete(self) -> bool:
        """The arguments' text is whole (their value ended, or "{}" stood in for none)."""
        return self._arguments == "whole"

    def feed(self, text: str) -> ScanResult:
        """Reads `text` until the object ends (or turns out not to be a call)."""
        self._new_name, self._new_arguments = None, []
        pos = 0
        while pos < len(text) and self._state != "end":
            pos = self._step(text, pos)
        return ScanResult(
            consumed=pos,
            name=self._new_name,
            arguments="".join(self._new_arguments),
            done=self._state == "end" and not self._rejected,
            rejected=self._rejected,
        )

    def _step(self, text: str, pos: int) -> int:
        state = self._state
        if state in ("key", "value"):
            end = self._value.feed(text, pos)
            self._read(text[pos:end])
            if self._value.done and state == "value":
                self._end_of_value()
            elif self._value.done:
                self._end_of_key()
            return end
        if text[pos] in JSON_WHITESPACE:
            return pos + 1
        char = text[pos]
        if state == "open":
            if char != "{":
                return self._fail(pos)
            if self._bare_name is None:
                self._state = "key_start"
                return pos + 1
            self._set_name(self._bare_name)
            self._key = "arguments"
            self._begin_value(char)
            return pos
        if state == "key_start" and char == '"':
            self._state, self._value, self._raw = "key", JsonScanner(), ""
            return pos
        if state == "colon" and char == ":":
            self._state = "value_start"
            return pos + 1
        if state == "value_start":
            return self._begin_value(char, pos)
        if state == "after_value" and char == ",":
            self._state = "key_start"
            return pos + 1
        if state in ("key_start", "after_value") and char == "}":
            return self._close(pos + 1)
        return self._fail(pos)

    def _begin_value(self, first: str, pos: int = 0) -> int:
        key = self._key
        if key == "name" and self._name is None:
            self._role = "name"
        elif key in _ARGUMENT_KEYS and self._arguments == "none":
            self._arguments = "reading"
            self._role = "arguments" if first == "{" else "raw_arguments"
        elif self._name is not None or key in _SKIPPED_KEYS:
            self._role = "skip"
        else:
            return self._fail(pos)
        self._state, self._value, self._raw = "value", JsonScanner(), ""
        return pos

    def _read(self, piece: str) -> None:
        if self._state == "key" or self._role in ("name", "raw_arguments"):
            self._raw += piece
        elif self._role == "arguments":
            self._add_arguments(piece)

    def _end_of_key(self) -> None:
        try:
            key = json.loads(self._raw)
        except ValueError:
            key = None
        self._key = key if isinstance(key, str) else ""
        self._state = "colon"

    def _end_of_value(self) -> None:
        self._state = "after_value"
        if self._role in ("arguments", "raw_arguments"):
            self._arguments = "whole"
        if self._bare_name is not None:
            self._state = "end"
        elif self._role == "name":
            name = _decoded(self._raw)
            if not isinstance(name, str):
                self._fail(0)
                return
            self._set_name(name)
        elif self._role == "raw_arguments":
            self._add_arguments(_unwrapped_arguments(self._raw))

    def _set_name(self, name: str) -> None:
        self._name = self._new_name = name
        self._new_arguments.extend(self._early)
        self._early = []

    def _add_arguments(self, piece: str) -> None:
        (self._new_arguments if self._name is not None else self._early).append(piece)

    def _close(self, pos: int) -> int:
        if self._name is None:
            return self._fail(pos)
        if self._arguments == "none":
            self._arguments = "whole"
            self._add_arguments("{}")
        self._state = "end"
        return pos

    def _fail(self, pos: int) -> int:
        if self._name is not None:
            return self._close(pos)
        self._rejected = True
        self._state = "end"
        return pos


def _decoded(raw: str) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _unwrapped_arguments(raw: str) -> str:
    """Arguments given as something other than an object: a string holding one, or "{}"."""
    value = _decoded(raw)
    if isinstance(value, str) and isinstance(_decoded(value), dict):
        return value
    return "{}"
