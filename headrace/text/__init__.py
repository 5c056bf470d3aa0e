"""Text: tokenizer, chat templates, streaming detokenization with stop strings, tool calls."""

from headrace.text.chat_template import RESERVED_TEMPLATE_VARIABLES, ChatTemplateError
from headrace.text.detokenizer import IncrementalDetokenizer
from headrace.text.function_spec import FunctionSpec
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
    ToolCallFormat,
    ToolCallMarkup,
    detect_tool_call_format,
    get_tool_call_format,
)
from headrace.text.tool_call_parser import ToolCallParser

__all__ = [
    "RESERVED_TEMPLATE_VARIABLES",
    "TOOL_CALL_FORMATS",
    "ChatTemplateError",
    "ContentDelta",
    "FunctionSpec",
    "IncrementalDetokenizer",
    "ParsedToolCall",
    "Tokenizer",
    "ToolCallArguments",
    "ToolCallEvent",
    "ToolCallFormat",
    "ToolCallMarkup",
    "ToolCallParser",
    "ToolCallStart",
    "detect_tool_call_format",
    "get_tool_call_format",
]
