from __future__ import annotations

from pathlib import Path

import pytest

from headrace.text import (
    TOOL_CALL_FORMATS,
    Tokenizer,
    detect_tool_call_format,
    get_tool_call_format,
)
from headrace.text.tool_call_format import template_knows_tools
from headrace.text.tool_call_syntax import HermesParser, Llama3JsonParser, MistralParser
from tests.text.factories import make_tokenizer_dir

# The telling parts of real templates.
QWEN = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
    "{{- tool | tojson }}{%- endfor %}{{- '</tools>\\nreturn a json object within "
    "<tool_call></tool_call> XML tags' }}{%- endif %}"
)
LLAMA_31 = (
    '{%- if tools is not none %}{{- \'Respond in the format {"name": function name, '
    '"parameters": dictionary of argument name and its value}\' }}{%- endif %}'
    "{%- if builtin_tools is defined %}{{- '<|python_tag|>' }}{%- endif %}"
)
LLAMA_32 = (
    '{%- if tools is not none %}{{- \'{"name": function name, "parameters": dictionary}\' }}'
    "{%- endif %}{%- if message.role == 'ipython' %}{{ message.content }}{%- endif %}"
)
MISTRAL = (
    "{%- if tools is not none %}{{- '[AVAILABLE_TOOLS]' + tools | tojson + '[/AVAILABLE_TOOLS]' }}"
    "{%- endif %}{%- if message.tool_calls %}{{- '[TOOL_CALLS][' }}{%- endif %}"
)
SMOLLM2 = "{% for message in messages %}{{'<|im_start|>' + message['role'] }}{% endfor %}"
UNKNOWN_STYLE = "{% if tools %}{{ tools | tojson }}{% endif %}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (QWEN, "hermes"),
        (LLAMA_31, "llama3_json"),
        (LLAMA_32, "llama3_json"),
        (MISTRAL, "mistral"),
        (SMOLLM2, "generic"),
        (None, "generic"),
        (UNKNOWN_STYLE, "hermes"),
        ("Tools: <tool_call> [TOOL_CALLS] {{ messages }}", "generic"),  # mentions, never reads
    ],
)
def test_detects_the_format_from_the_template(template: str | None, expected: str) -> None:
    assert detect_tool_call_format(template) is TOOL_CALL_FORMATS[expected]
    assert template_knows_tools(template) == (expected != "generic")


def test_special_tokens_break_the_tie_for_an_unknown_style() -> None:
    assert detect_tool_call_format(UNKNOWN_STYLE, ["<s>", "[TOOL_CALLS]"]).name == "mistral"
    assert detect_tool_call_format(SMOLLM2, ["[TOOL_CALLS]"]).name == "generic"


def test_format_names_are_checked() -> None:
    for name, fmt in TOOL_CALL_FORMATS.items():
        assert get_tool_call_format(name) is fmt and fmt.name == name
    with pytest.raises(ValueError, match="unknown tool-call format 'qwen'; known formats: hermes"):
        get_tool_call_format("qwen")


@pytest.mark.parametrize(
    ("name", "parser", "forced_in"),
    [
        ("hermes", HermesParser, "hermes"),
        ("generic", HermesParser, "generic"),
        ("llama3_json", Llama3JsonParser, "hermes"),
        ("mistral", MistralParser, "hermes"),
    ],
)
def test_each_format_reads_its_replies_and_forces_calls_in_a_grammar_syntax(
    name: str, parser: type, forced_in: str
) -> None:
    fmt = TOOL_CALL_FORMATS[name]
    assert type(fmt.parser()) is parser
    forced = fmt.for_forced_calls
    assert forced.name == forced_in and forced.markup is not None
    assert (fmt.markup is None) == (forced is not fmt)


def test_only_the_generic_format_is_taught() -> None:
    assert [name for name, fmt in TOOL_CALL_FORMATS.items() if fmt.teach] == ["generic"]


def test_tokenizer_reads_its_own_template_and_special_tokens(tmp_path: Path) -> None:
    path = make_tokenizer_dir(tmp_path, chat_template=UNKNOWN_STYLE, extra_special=["[TOOL_CALLS]"])
    tok = Tokenizer.from_path(path)
    assert (tok.supports_tools, tok.tool_call_format.name) == (True, "mistral")


def test_only_named_special_tokens_are_kept_and_never_eos(tmp_path: Path) -> None:
    path = make_tokenizer_dir(tmp_path, extra_special=["[TOOL_CALLS]", "[ARGS]"])
    tok = Tokenizer.from_path(path)
    ids = tok.encode("<s>[TOOL_CALLS]f[ARGS]{}<|im_end|>")
    detokenizer = tok.detokenizer(keep_special=["[TOOL_CALLS]", "<|im_end|>", "not a token"])
    assert detokenizer.push(ids) + detokenizer.flush() == "[TOOL_CALLS]f{}"
