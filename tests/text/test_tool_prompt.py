"""Tools and tool history in the prompt: passed through to templates that know tools, taught in
headrace's generic format to templates that do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headrace.text import Tokenizer, tool_prompt
from headrace.text.chat_template import render_chat
from headrace.text.tool_prompt import tools_prompt
from tests.text.factories import make_tokenizer_dir

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Berlin and Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            call("call_1", "get_weather", '{"location": "Berlin"}'),
            call("call_2", "get_weather", '{"location": "Paris"}'),
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "12°C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "15°C"},
    {
        "role": "assistant",
        "content": "Berlin 12°C, Paris 15°C. Time?",
        "tool_calls": [
            call("call_3", "get_time", "{}"),
        ],
    },
    {"role": "tool", "tool_call_id": "call_3", "content": "noon"},
]

TOOLS_TEXT = (
    "# Tools\n\n"
    "You may call one or more functions to help with the user's request. The functions, as JSON "
    "schemas, one a line:\n"
    "<tools>\n"
    '{"name": "get_weather", "description": "Current weather in a city", "parameters": '
    '{"type": "object", "properties": {"location": {"type": "string"}}, "required": '
    '["location"]}}\n'
    '{"name": "get_time", "parameters": {}}\n'
    "</tools>\n\n"
    "To call a function, reply with:\n"
    '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>\n'
    "Write one <tool_call> block per call; for several calls, write the blocks one after another. "
    "Each result comes back to you in a <tool_response></tool_response> block, in the order of "
    "the calls."
)

HISTORY_TEXT = (
    "<|im_start|>user\nWeather in Berlin and Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>{"name": "get_weather", "arguments": {"location": "Berlin"}}</tool_call>\n'
    '<tool_call>{"name": "get_weather", "arguments": {"location": "Paris"}}</tool_call><|im_end|>\n'
    "<|im_start|>user\n"
    "<tool_response>\n12°C\n</tool_response>\n<tool_response>\n15°C\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nBerlin 12°C, Paris 15°C. Time?\n"
    '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nnoon\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# A template that renders tools and tool history itself.
TOOL_AWARE = (
    "{%- if tools %}TOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}"
    "{{ '\\n' }}{% endif %}"
    "{%- for m in messages %}{{ m.role }}: {{ m.content }}"
    "{%- for c in m.tool_calls or [] %} [{{ c.id }} {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}]{% endfor %}"
    "{%- if m.tool_call_id %} (answers {{ m.tool_call_id }}){% endif %}{{ '\\n' }}{% endfor %}"
    "{%- if add_generation_prompt %}assistant: {% endif %}"
)


def prompt(tok: Tokenizer, messages: list[dict[str, Any]], tools: Any = None) -> str:
    text = render_chat(tok.hf, messages, tools)
    assert tok.apply_chat_template(messages, tools=tools) == tok.encode(text)
    return text


def test_smollm2_knows_no_tools(smollm_tokenizer: Tokenizer) -> None:
    assert not smollm_tokenizer.supports_tools
    assert smollm_tokenizer.tool_call_format.name == "generic"


def test_smollm2_gets_tools_and_history_in_the_generic_format(
    smollm_tokenizer: Tokenizer,
) -> None:
    text = prompt(smollm_tokenizer, HISTORY, [WEATHER_TOOL, TIME_TOOL])
    assert text == f"<|im_start|>system\n{TOOLS_TEXT}<|im_end|>\n" + HISTORY_TEXT


def test_tools_join_the_conversations_own_system_message(smollm_tokenizer: Tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *HISTORY]
    text = prompt(smollm_tokenizer, messages, [WEATHER_TOOL, TIME_TOOL])
    assert text == f"<|im_start|>system\nBe brief.\n\n{TOOLS_TEXT}<|im_end|>\n" + HISTORY_TEXT


def test_history_without_tools_still_renders_the_calls(smollm_tokenizer: Tokenizer) -> None:
    text = prompt(smollm_tokenizer, HISTORY)
    assert text == f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n" + HISTORY_TEXT
    assert prompt(smollm_tokenizer, HISTORY, []) == text


def test_the_documented_format_is_the_one_taught() -> None:
    taught = tools_prompt([TIME_TOOL])
    documented = " ".join((tool_prompt.__doc__ or "").split())
    for part in taught.split("<tools>\n" + '{"name": "get_time", "parameters": {}}\n'):
        assert " ".join(part.split()) in documented


@pytest.mark.parametrize(
    "template",
    [None, "{{ bos_token }}{% for m in messages %}{{ m.role }}|{{ m.content }}\n{% endfor %}"],
)
def test_chatml_and_other_toolless_templates_are_generic(
    tmp_path: Path, template: str | None
) -> None:
    tok = Tokenizer.from_path(make_tokenizer_dir(tmp_path, chat_template=template))
    assert (tok.supports_tools, tok.tool_call_format.name) == (False, "generic")
    text = prompt(tok, [{"role": "user", "content": "hi"}], [TIME_TOOL])
    assert TOOLS_TEXT[TOOLS_TEXT.index("To call") :] in text
    assert '{"name": "get_time", "parameters": {}}' in text


def test_a_template_that_knows_tools_gets_them_as_they_are(tmp_path: Path) -> None:
    tok = Tokenizer.from_path(make_tokenizer_dir(tmp_path, chat_template=TOOL_AWARE))
    assert (tok.supports_tools, tok.tool_call_format.name) == (True, "hermes")
    text = prompt(tok, HISTORY[:3], [WEATHER_TOOL, TIME_TOOL])
    assert text == (
        "TOOLS: get_weather get_time\n"
        "user: Weather in Berlin and Paris?\n"
        'assistant:  [call_1 get_weather {"location": "Berlin"}]'
        ' [call_2 get_weather {"location": "Paris"}]\n'
        "tool: 12°C (answers call_1)\n"
        "assistant: "
    )
    assert "<tool_call>" not in text and "# Tools" not in text
