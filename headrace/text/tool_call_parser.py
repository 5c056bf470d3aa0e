"""Tool calls found in the model's text as it streams: content, call names, argument pieces.

Push the detokenized text in any pieces; each push returns the events that text made certain:
`ContentDelta`, `ToolCallStart` (a call's index and complete name), then `ToolCallArguments`
pieces as the arguments are generated. A call's pieces add up to the JSON text of its arguments
object. `finish()` ends the reply. Each format is a subclass (`headrace.text.tool_call_syntax`);
each `ToolCallFormat` of `headrace.text.tool_call_format` makes one. Every call's object
is read by `ToolCallScanner`.

What is content:
- Text before the first call is content, verbatim.
- Call markup never is: text that could be the start of a marker (`<tool_ca`) is held back, like
  a stop string, until it either completes the marker or turns out to be plain text.
- Whitespace after a call (between calls, or at the end) is dropped, and so are the separators
  and closers of the format (`</tool_call>`, ";", ",", "]").
- Other text after a call is content again, from its first non-whitespace character (hermes and
  mistral still find calls in it; llama3_json only at the start of the reply and right after
  another call).
- Text that looked like a call but turned out not to be one before the call's name was complete
  (not an object, no "name", another key first, or the reply ended) is given back as content,
  verbatim, markup included. A call whose name is out stands: a reply that ends before its
  arguments are whole leaves it incomplete (`ParsedToolCall.complete` is False).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from headrace.text.json_scanner import JSON_WHITESPACE
from headrace.text.stop_matcher import partial_match_length
from headrace.text.tool_call import (
    ContentDelta,
    ParsedToolCall,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallStart,
)
from headrace.text.tool_call_scanner import ToolCallScanner

__all__ = ["ToolCallParser"]


class ToolCallParser(ABC):
    """Splits one reply's text into content and tool-call events; one subclass per format."""

    # Special tokens whose text the parser must see: keep them when detokenizing.
    markers: ClassVar[tuple[str, ...]] = ()
    # Markers that open a call anywhere in the content.
    _openers: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        # Text pushed but not read yet.
        self._pending = ""
        # Where the reply is: start, content, object, after_call, or a format's own state.
        self._state = "start"
        # Text read as part of a call whose name is not known yet: content if it is no call.
        self._held = ""
        # Reads the current call's object.
        self._scanner = ToolCallScanner()
        # Events of the current push.
        self._events: list[ToolCallEvent] = []
        # All content so far.
        self._content: list[str] = []
        # Per call so far: its name, its argument pieces, and whether its object closed.
        self._names: list[str] = []
        self._arguments: list[list[str]] = []
        self._complete: list[bool] = []
        # Set by finish().
        self._finished = False

    @property
    def content(self) -> str:
        """All content so far."""
        return "".join(self._content)

    @property
    def tool_calls(self) -> list[ParsedToolCall]:
        """Every call so far, whole; after finish(), the reply's calls."""
        return [
            ParsedToolCall(index, name, "".join(pieces), complete)
            for index, (name, pieces, complete) in enumerate(
                zip(self._names, self._arguments, self._complete, strict=True)
            )
        ]

    def push(self, text: str) -> list[ToolCallEvent]:
        """Reads more of the reply; returns the events it made certain."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        self._pending += text
        while self._pending and self._step(final=False):
            pass
        return self._take_events()

    def finish(self) -> list[ToolCallEvent]:
        """The reply is over: everything still held back comes out."""
        if self._finished:
            return []
        self._finished = True
        while self._pending and self._step(final=True):
            pass
        if self._state == "object" and self._scanner.name is not None:
            self._complete[-1] = self._scanner.arguments_complete
        else:
            self._held += self._pending
            self._pending = ""
            self._reject()
        return self._take_events()

    def _step(self, final: bool) -> bool:
        """Reads from the pending text; False when it needs more text to go on."""
        if self._state == "start":
            return self._start(final)
        if self._state == "content":
            return self._read_content(final)
        if self._state == "object":
            return self._read_object()
        if self._state == "after_call":
            return self._after_call(final)
        return self._format_step(final)

    def _start(self, final: bool) -> bool:
        self._state = "content"
        return True

    def _read_content(self, final: bool) -> bool:
        text = self._pending
        found = [(text.find(opener), opener) for opener in self._openers]
        found = [(at, opener) for at, opener in found if at >= 0]
        if found:
            at, opener = min(found)
            self._emit_content(text[:at])
            self._pending = text[at + len(opener) :]
            self._open(opener)
            return True
        keep = 0 if final else partial_match_length(text, self._openers)
        self._emit_content(text[: len(text) - keep])
        self._pending = text[len(text) - keep :]
        return False

    def _open(self, opener: str) -> None:
        """An opener was read: a call object follows."""
        self._begin_object(opener)

    def _begin_object(self, held: str) -> None:
        self._held = held
        self._scanner = ToolCallScanner()
        self._state = "object"

    def _read_object(self) -> bool:
        result = self._scanner.feed(self._pending)
        piece, self._pending = self._pending[: result.consumed], self._pending[result.consumed :]
        if self._scanner.name is None or result.rejected:
            self._held += piece
        if result.rejected:
            self._reject()
            return True
        if result.name is not None:
            self._start_call(result.name)
        if result.arguments:
            self._emit_arguments(result.arguments)
        if result.done:
            self._complete[-1] = True
            self._state = "after_call"
        return result.done

    @abstractmethod
    def _after_call(self, final: bool) -> bool:
        """After a call's object: the format's closers and separators, or the next call."""

    def _format_step(self, final: bool) -> bool:
        """A format's own states."""
        raise AssertionError(f"no such state: {self._state}")

    def _skip_whitespace(self) -> bool:
        """Drops leading whitespace; True if text is left."""
        self._pending = self._pending.lstrip(JSON_WHITESPACE)
        return bool(self._pending)

    def _lookahead(self, markers: tuple[str, ...], final: bool) -> str | None:
        """The marker the pending text starts with; "" if it may still become one; else None."""
        for marker in markers:
            if self._pending.startswith(marker):
                return marker
        if not final and any(marker.startswith(self._pending) for marker in markers):
            return ""
        return None

    def _consume(self, marker: str) -> None:
        self._pending = self._pending[len(marker) :]

    def _reject(self) -> None:
        """What was held as a possible call is content after all."""
        self._emit_content(self._held)
        self._held = ""
        self._state = "content"

    def _start_call(self, name: str) -> None:
        self._held = ""
        self._events.append(ToolCallStart(len(self._names), name))
        self._names.append(name)
        self._arguments.append([])
        self._complete.append(False)

    def _emit_content(self, text: str) -> None:
        if not text:
            return
        self._content.append(text)
        last = self._events[-1] if self._events else None
        if isinstance(last, ContentDelta):
            self._events[-1] = ContentDelta(last.text + text)
        else:
            self._events.append(ContentDelta(text))

    def _emit_arguments(self, text: str) -> None:
        index = len(self._names) - 1
        self._arguments[index].append(text)
        last = self._events[-1] if self._events else None
        if isinstance(last, ToolCallArguments) and last.index == index:
            self._events[-1] = ToolCallArguments(index, last.text + text)
        else:
            self._events.append(ToolCallArguments(index, text))

    def _take_events(self) -> list[ToolCallEvent]:
        events, self._events = self._events, []
        return events
