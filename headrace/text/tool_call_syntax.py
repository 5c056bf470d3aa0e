"""The syntax of each tool-call format: where calls open, what separates them, what closes them.

See `headrace.text.tool_call_format` for the formats and `headrace.text.tool_call_parser` for what
becomes content.
"""

from __future__ import annotations

from headrace.text.json_scanner import JSON_WHITESPACE
from headrace.text.tool_call_parser import ToolCallParser
from headrace.text.tool_call_scanner import ToolCallScanner

__all__ = ["HermesParser", "Llama3JsonParser", "MistralParser"]


class HermesParser(ToolCallParser):
    """`<tool_call>{...}</tool_call>` blocks, anywhere in the reply."""

    markers = ("<tool_call>", "</tool_call>")
    _openers = ("<tool_call>",)

    def _after_call(self, final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        marker = self._lookahead(("</tool_call>", "<tool_call>"), final)
        if marker == "":
            return False
        if marker is None:
            self._state = "content"
            return True
        self._consume(marker)
        if marker == "<tool_call>":
            self._open(marker)
        return True


class Llama3JsonParser(ToolCallParser):
    """A reply that begins with a call object (maybe after `<|python_tag|>`); ";" between calls."""

    markers = ("<|python_tag|>",)

    def _start(self, final: bool) -> bool:
        text = self._pending
        self._pending = text.lstrip(JSON_WHITESPACE)
        self._held += text[: len(text) - len(self._pending)]
        return bool(self._pending) and self._next_call(final, self._held)

    def _after_call(self, final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        if self._pending.startswith(";"):
            self._consume(";")
            return True
        return self._next_call(final, "")

    def _next_call(self, final: bool, held: str) -> bool:
        tag = self._lookahead(self.markers, final)
        if tag == "":
            return False
        if tag is not None:
            self._consume(tag)
            self._begin_object(held + tag)
        elif self._pending.startswith("{"):
            self._begin_object(held)
        else:
            self._held = held
            self._reject()
        return True


class MistralParser(ToolCallParser):
    """`[TOOL_CALLS]` then a JSON array of call objects, or `name[ARGS]{...}` per call."""

    markers = ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]")
    _openers = ("[TOOL_CALLS]",)
    # Longest name text waited for before `[ARGS]`; longer, it is no call.
    _MAX_NAME = 256

    def __init__(self) -> None:
        super().__init__()
        # The calls being read are items of a JSON array.
        self._in_array = False

    def _open(self, opener: str) -> None:
        self._held = opener
        self._state = "after_tag"

    def _format_step(self, final: bool) -> bool:
        if self._state == "after_tag":
            return self._after_tag()
        return self._read_name(final)

    def _after_tag(self) -> bool:
        text = self._pending
        if not self._skip_whitespace():
            self._held += text
            return False
        self._held += text[: len(text) - len(self._pending)]
        self._in_array = self._pending.startswith("[")
        if self._in_array:
            self._consume("[")
            self._begin_object(self._held + "[")
        elif self._pending.startswith("{"):
            self._begin_object(self._held)
        else:
            self._state = "name"
        return True

    def _read_name(self, final: bool) -> bool:
        at = self._pending.find("[ARGS]")
        if at < 0:
            if final or _has_whitespace(self._pending) or len(self._pending) > self._MAX_NAME:
                self._held += self._pending
                self._pending = ""
                self._reject()
                return True
            return False
        name = self._pending[:at].split("[CALL_ID]")[0]
        self._held += self._pending[: at + len("[ARGS]")]
        self._pending = self._pending[at + len("[ARGS]") :]
        if not name or _has_whitespace(name):
            self._reject()
            return True
        self._scanner, self._state = ToolCallScanner(name), "object"
        return True

    def _after_call(self, final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        if self._in_array and self._pending[0] in ",]":
            self._in_array = self._pending[0] == ","
            self._consume(self._pending[0])
            if self._in_array:
                self._begin_object("")
            return True
        self._in_array = False
        marker = self._lookahead(self._openers, final)
        if marker == "":
            return False
        if marker is None:
            self._state = "content"
            return True
        self._consume(marker)
        self._open(marker)
        return True


def _has_whitespace(text: str) -> bool:
    return any(char.isspace() for char in text)
