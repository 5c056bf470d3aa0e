"""One assistant reply as it streams: its text read into content and tool calls.

With tools in play the text goes through the format's tool-call parser: content comes out as
content deltas, each call as a first delta with its `index`, `id`, `type`, `name` and empty
`arguments`, then deltas with only `index` and argument fragments — the shape the SDKs
accumulate by `index`. Without tools the text is all content.
"""

from __future__ import annotations

import uuid

from headrace.serving.responses import (
    Delta,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
)
from headrace.text import (
    ContentDelta,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallFormat,
    ToolCallParser,
    ToolCallStart,
)

__all__ = ["Reply"]


class Reply:
    def __init__(self, tool_call_format: ToolCallFormat | None) -> None:
        self._parser: ToolCallParser | None = (
            tool_call_format.parser() if tool_call_format is not None else None
        )
        self._content: list[str] = []
        self._call_ids: list[str] = []

    @property
    def markers(self) -> tuple[str, ...]:
        """Special tokens whose text the reader needs to see."""
        return self._parser.markers if self._parser else ()

    def feed(self, text: str, *, last: bool) -> list[Delta]:
        """Read more of the reply's text (`last`: the reply is over); return the new deltas."""
        if self._parser is None:
            self._content.append(text)
            return [Delta(content=text)] if text else []
        events = self._parser.push(text) if text else []
        if last:
            events += self._parser.finish()
        return [self._delta(event) for event in events]

    def finish_reason(self, engine_reason: FinishReason) -> FinishReason:
        """ "tool_calls" when the model called tools and ended on its own."""
        return "tool_calls" if self._call_ids and engine_reason == "stop" else engine_reason

    @property
    def content(self) -> str | None:
        """The whole content; None when the reply is only tool calls."""
        text = "".join(self._content)
        return None if self._call_ids and not text else text

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call of the reply, once it is over."""
        if self._parser is None:
            return []
        return [
            ToolCall(
                id=self._call_ids[call.index],
                type="function",
                function=FunctionCall(name=call.name, arguments=call.arguments),
            )
            for call in self._parser.tool_calls
        ]

    def _delta(self, event: ToolCallEvent) -> Delta:
        if isinstance(event, ContentDelta):
            self._content.append(event.text)
            return Delta(content=event.text)
        if isinstance(event, ToolCallStart):
            assert event.index == len(self._call_ids), "calls are numbered in order"
            self._call_ids.append(f"call_{uuid.uuid4().hex[:24]}")
            first = ToolCallDelta(
                index=event.index,
                id=self._call_ids[-1],
                type="function",
                function=FunctionCallDelta(name=event.name, arguments=""),
            )
            return Delta(tool_calls=[first])
        assert isinstance(event, ToolCallArguments)
        fragment = FunctionCallDelta(arguments=event.text)
        return Delta(tool_calls=[ToolCallDelta(index=event.index, function=fragment)])
