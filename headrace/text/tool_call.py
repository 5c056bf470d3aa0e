"""What a tool-call parser makes of the model's text: content, and calls streamed piece by piece."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ContentDelta", "ParsedToolCall", "ToolCallArguments", "ToolCallEvent", "ToolCallStart"]


@dataclass(frozen=True)
class ContentDelta:
    """Plain assistant text, free of any call markup."""

    # The text, never empty.
    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call begins: its name is complete. Its arguments follow in ToolCallArguments."""

    # Which call of the reply: 0, 1, 2, ... in order of appearance.
    index: int
    # The function's name.
    name: str


@dataclass(frozen=True)
class ToolCallArguments:
    """More of a call's arguments, as generated; a call's pieces add up to its arguments' JSON."""

    # The call these arguments belong to (its ToolCallStart came first).
    index: int
    # The next piece of the arguments object's JSON text, never empty.
    text: str


# One step of a parsed reply, in the order the text produced them.
ToolCallEvent = ContentDelta | ToolCallStart | ToolCallArguments


@dataclass(frozen=True)
class ParsedToolCall:
    """A whole call, once the reply is parsed."""

    # Which call of the reply: 0, 1, 2, ...
    index: int
    # The function's name.
    name: str
    # The arguments object's JSON text, as generated (whitespace and all).
    arguments: str
    # False when the text ended inside the call's arguments: they may then not be valid JSON.
    complete: bool
