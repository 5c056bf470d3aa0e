"""Text: tokenizer, chat templates, streaming detokenization with stop strings, tool calls."""

from headrace.text.chat_template import ChatTemplateError
from headrace.text.detokenizer import IncrementalDetokenizer
from headrace.text.tokenizer import Tokenizer
from headrace.text.tool_call import (
    ContentDelta,
    ParsedToolCall,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallStart,
)
from headrace.text.tool_call_format import (
    TOOL_CALL_FORMATS,
    check_tool_call_format,
    detect_tool_call_format,
    make_tool_call_parser,
)
from headrace.text.tool_call_parser import ToolCallParser

__all__ = [
    "TOOL_CALL_FORMATS",
    "ChatTemplateError",
    "ContentDelta",
    "IncrementalDetokenizer",
    "ParsedToolCall",
    "Tokenizer",
    "ToolCallArguments",
    "ToolCallEvent",
    "ToolCallParser",
    "ToolCallStart",
    "check_tool_call_format",
    "detect_tool_call_format",
    "make_tool_call_parser",
]
