"""Tool-call formats: how a model writes its calls, and what headrace does with each.

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

Each is one `ToolCallFormat`: its parser, the markup a grammar writes forced calls in (hermes and
generic only), and for generic the rewriting that teaches it. `TOOL_CALL_FORMATS` holds them by
name; `detect_tool_call_format` tells a model's from its chat template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from headrace.text.tool_call_parser import ToolCallParser
from headrace.text.tool_call_syntax import HermesParser, Llama3JsonParser, MistralParser
from headrace.text.tool_prompt import generic_tool_messages

__all__ = [
    "TOOL_CALL_FORMATS",
    "ToolCallFormat",
    "ToolCallMarkup",
    "detect_tool_call_format",
    "get_tool_call_format",
    "template_knows_tools",
]

# Prepared messages and OpenAI-shaped tools in, the conversation a template without tools renders.
TeachTools = Callable[
    [Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]] | None], list[dict[str, Any]]
]


@dataclass(frozen=True)
class ToolCallMarkup:
    """What a grammar writes around forced calls: `open {"name": ..., "arguments": {...}} close`."""

    # Text before each call's JSON.
    open: str
    # Text after each call's JSON.
    close: str
    # Text between two calls, when several are allowed.
    separator: str


@dataclass(frozen=True)
class ToolCallFormat:
    """One way of writing tool calls: how replies are read, forced, and (generic) taught."""

    # Its name, as `--tool-call-parser` (and vLLM's) spells it.
    name: str
    # Makes a fresh parser for one reply in this format.
    parser: Callable[[], ToolCallParser]
    # What a grammar writes forced calls in; None: no grammar writes this format.
    markup: ToolCallMarkup | None
    # Rewrites a conversation and its tools to teach this format to a model whose chat template
    # knows no tools (the generic format's system prompt); None: the template renders tools.
    teach: TeachTools | None = None

    @property
    def for_forced_calls(self) -> ToolCallFormat:
        """The format forced calls are written (and read) in: this one if a grammar can write
        it, else hermes'."""
        return self if self.markup is not None else _HERMES


_HERMES_MARKUP = ToolCallMarkup(open="<tool_call>\n", close="\n</tool_call>", separator="\n")
_HERMES = ToolCallFormat("hermes", HermesParser, _HERMES_MARKUP)
_LLAMA3_JSON = ToolCallFormat("llama3_json", Llama3JsonParser, None)
_MISTRAL = ToolCallFormat("mistral", MistralParser, None)
# Hermes' syntax under a neutral name, taught by headrace's own prompt.
_GENERIC = ToolCallFormat("generic", HermesParser, _HERMES_MARKUP, teach=generic_tool_messages)

# Every format, by name.
TOOL_CALL_FORMATS: Mapping[str, ToolCallFormat] = MappingProxyType(
    {fmt.name: fmt for fmt in (_HERMES, _LLAMA3_JSON, _MISTRAL, _GENERIC)}
)

# Jinja's statements and expressions, where a template would read its `tools` variable.
_JINJA_CODE = re.compile(r"\{[{%](.*?)[%}]\}", re.DOTALL)
_TOOLS_VARIABLE = re.compile(r"\btools\b")


def get_tool_call_format(name: str) -> ToolCallFormat:
    """The format called `name`; ValueError, naming the known ones, for an unknown name."""
    fmt = TOOL_CALL_FORMATS.get(name)
    if fmt is None:
        known = ", ".join(TOOL_CALL_FORMATS)
        raise ValueError(f"unknown tool-call format {name!r}; known formats: {known}")
    return fmt


def template_knows_tools(chat_template: str | None) -> bool:
    """Whether the template renders tools itself (it reads a `tools` variable)."""
    if chat_template is None:
        return False
    code = _JINJA_CODE.findall(chat_template)
    return any(_TOOLS_VARIABLE.search(block) for block in code)


def detect_tool_call_format(
    chat_template: str | None, special_tokens: Collection[str] = ()
) -> ToolCallFormat:
    """The format a model with this template (and these special tokens) writes its calls in.

    A template that knows no tools gets `generic`, whatever it mentions: headrace then teaches
    the model its own format, and the parser must read that. One that knows tools in no
    recognised style gets `mistral` if `[TOOL_CALLS]` is a special token, else `hermes`, the
    most common convention.
    """
    if not template_knows_tools(chat_template):
        return _GENERIC
    template = chat_template or ""
    if "[TOOL_CALLS]" in template:
        return _MISTRAL
    if "<tool_call>" in template:
        return _HERMES
    if "<|python_tag|>" in template or ('"parameters"' in template and "ipython" in template):
        return _LLAMA3_JSON
    return _MISTRAL if "[TOOL_CALLS]" in special_tokens else _HERMES
