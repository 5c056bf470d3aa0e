"""Which tool-call format a model writes, told from its chat template.

The names follow vLLM's `--tool-call-parser`:
- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call
  (Hermes 2/3, Qwen 2.5 and later).
- `llama3_json`: Llama 3.1-3.3: a reply that begins with `{"name": ..., "parameters": {...}}`
  (maybe after `<|python_tag|>`), several calls separated by ";".
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or the newer
  `[TOOL_CALLS]name[ARGS]{...}`.
- `generic`: the format headrace teaches a model whose template knows no tools (see
  `headrace.text.tool_prompt`); its syntax is hermes', so parsing and constrained decoding share
  one shape. A template "knows tools" when it reads a `tools` variable.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from headrace.text.tool_call_parser import ToolCallParser
from headrace.text.tool_call_syntax import HermesParser, Llama3JsonParser, MistralParser

__all__ = [
    "TOOL_CALL_FORMATS",
    "check_tool_call_format",
    "detect_tool_call_format",
    "make_tool_call_parser",
    "template_knows_tools",
]

# Every format name a parser exists for.
TOOL_CALL_FORMATS = ("hermes", "llama3_json", "mistral", "generic")

# Jinja's statements and expressions, where a template would read its `tools` variable.
_JINJA_CODE = re.compile(r"\{[{%](.*?)[%}]\}", re.DOTALL)
_TOOLS_VARIABLE = re.compile(r"\btools\b")


def check_tool_call_format(name: str) -> str:
    """`name` if it is a known format; ValueError otherwise."""
    if name not in TOOL_CALL_FORMATS:
        known = ", ".join(TOOL_CALL_FORMATS)
        raise ValueError(f"unknown tool-call format {name!r}; known formats: {known}")
    return name


def make_tool_call_parser(fmt: str) -> ToolCallParser:
    """A fresh parser for one reply in format `fmt`; ValueError for an unknown name."""
    match check_tool_call_format(fmt):
        case "llama3_json":
            return Llama3JsonParser()
        case "mistral":
            return MistralParser()
        case _:  # hermes, and generic, which writes hermes' syntax
            return HermesParser()


def template_knows_tools(chat_template: str | None) -> bool:
    """Whether the template renders tools itself (it reads a `tools` variable)."""
    if chat_template is None:
        return False
    code = _JINJA_CODE.findall(chat_template)
    return any(_TOOLS_VARIABLE.search(block) for block in code)


def detect_tool_call_format(chat_template: str | None, special_tokens: Collection[str] = ()) -> str:
    """The format a model with this template (and these special tokens) writes its calls in.

    A template that knows no tools gets `generic`, whatever it mentions: headrace then teaches
    the model its own format, and the parser must read that. One that knows tools in no
    recognised style gets `mistral` if `[TOOL_CALLS]` is a special token, else `hermes`, the
    most common convention.
    """
    if not template_knows_tools(chat_template):
        return "generic"
    template = chat_template or ""
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<tool_call>" in template:
        return "hermes"
    if "<|python_tag|>" in template or ('"parameters"' in template and "ipython" in template):
        return "llama3_json"
    return "mistral" if "[TOOL_CALLS]" in special_tokens else "hermes"
