"""Where one JSON value ends, found in text that arrives in pieces.

The scanner tracks only what decides a value's extent: whether it is inside a string, whether
the last character was a backslash escape, and how deep it is in objects and arrays. It does not
validate; the value's text goes on exactly as generated. Strings end at their closing quote,
objects and arrays when their brackets balance, and scalars (numbers, true, false, null) at the
first character that cannot belong to them, which is left unconsumed.
"""

from __future__ import annotations

import re

__all__ = ["JSON_WHITESPACE", "JsonScanner"]

# The four characters JSON allows between tokens.
JSON_WHITESPACE = " \t\n\r"

# Characters that matter inside a string, and outside strings inside a container.
_IN_STRING = re.compile(r'["\\]')
_IN_CONTAINER = re.compile(r'["{}\[\]]')
# A scalar ends at whitespace or any structural character.
_SCALAR_END = re.compile(r'[ \t\n\r,:{}\[\]"]')


class JsonScanner:
    """Consumes the characters of one JSON value, reporting when it is complete."""

    def __init__(self) -> None:
        # What the value is, once its first character is seen: "string", "container" or "scalar".
        self._kind: str | None = None
        # Inside a string (the value itself, or one nested in a container).
        self._in_string = False
        # The previous character was a backslash inside a string.
        self._escape = False
        # Open objects and arrays.
        self._depth = 0
        # The value is complete.
        self._done = False

    @property
    def done(self) -> bool:
        """The value is complete; later calls consume nothing."""
        return self._done

    @property
    def kind(self) -> str | None:
        """The value's kind once it has begun: "string", "container" or "scalar"; else None."""
        return self._kind

    def feed(self, text: str, start: int = 0) -> int:
        """Consumes the value's characters from `text[start:]`; returns the index after the last.

        The value must begin at `start` (no leading whitespace). When `done` turns True, the
        returned index is just past the value's last character.
        """
        pos = start
        if self._done or pos >= len(text):
            return pos
        if self._kind is None:
            first = text[pos]
            if first == '"':
                self._kind, self._in_string = "string", True
                pos += 1
            elif first in "{[":
                self._kind, self._depth = "container", 1
                pos += 1
            else:
                self._kind = "scalar"
        while pos < len(text) and not self._done:
            pos = self._step(text, pos)
        return pos

    def _step(self, text: str, pos: int) -> int:
        """Moves past the next character that matters; returns the new position."""
        if self._kind == "scalar":
            end = _SCALAR_END.search(text, pos)
            if end is None:
                return len(text)
            self._done = True
            return end.start()
        if self._in_string:
            if self._escape:
                self._escape = False
                return pos + 1
            found = _IN_STRING.search(text, pos)
            if found is None:
                return len(text)
            if found.group() == "\\":
                self._escape = True
            else:
                self._in_string = False
                self._done = self._kind == "string"
            return found.end()
        found = _IN_CONTAINER.search(text, pos)
        if found is None:
            return len(text)
        char = found.group()
        if char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        else:
            self._depth -= 1
            self._done = self._depth == 0
        return found.end()
