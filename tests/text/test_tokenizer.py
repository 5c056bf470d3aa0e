from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headrace.text import ChatTemplateError, Tokenizer
from headrace.text.chat_template import (
    CHATML_TEMPLATE,
    RESERVED_TEMPLATE_VARIABLES,
    read_chat_template,
)
from tests.text.factories import (
    BOS_ID,
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    make_tokenizer_dir,
)

ALTERNATING = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '[' + message['role'] + '] ' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)

ECHO_EXTRAS = (
    "{% for m in messages %}"
    "{{ m.role }}|{{ m.content }}|{{ m.name }}|{{ m.tool_call_id }}|"
    "{% for call in m.tool_calls or [] %}{{ call.id }}:{{ call.function.name }}"
    "{{ call.function.arguments | tojson }}{% endfor %}{{ '\\n' }}"
    "{% endfor %}"
    "{% for tool in tools or [] %}tool:{{ tool.function.name }}{{ '\\n' }}{% endfor %}"
)


def with_template(tmp_path: Path, template: str | None, **kwargs: Any) -> Tokenizer:
    return Tokenizer.from_path(make_tokenizer_dir(tmp_path, chat_template=template, **kwargs))


def rendered(tok: Tokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return tok.decode(tok.apply_chat_template(messages, **kwargs))


def test_loads_eos_ids_and_vocab_size(tiny_tokenizer: Tokenizer) -> None:
    # <|im_end|> from tokenizer_config.json, <|endoftext|> too from generation_config.json
    assert tiny_tokenizer.eos_token_ids == frozenset({IM_END_ID, ENDOFTEXT_ID})
    assert tiny_tokenizer.vocab_size == 400


def test_from_path_takes_a_string(tmp_path: Path) -> None:
    tok = Tokenizer.from_path(str(make_tokenizer_dir(tmp_path)))
    assert tok.encode("hi") == tok.encode("hi")


def test_from_path_refuses_what_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_path(tmp_path / "missing")


def test_encode_adds_no_bos_or_eos_and_round_trips(tiny_tokenizer: Tokenizer) -> None:
    text = "Hello world! 😀 你好 Grüße\n"
    ids = tiny_tokenizer.encode(text)
    assert BOS_ID not in ids and IM_END_ID not in ids
    assert tiny_tokenizer.decode(ids) == text


def test_special_token_text_maps_to_special_ids(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("<|im_start|>user\nhi<|im_end|><s>")
    assert ids[0] == IM_START_ID
    assert ids[-2:] == [IM_END_ID, BOS_ID]
    assert tiny_tokenizer.decode(ids) == "user\nhi"


def test_decode_skips_special_and_eos_tokens(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("ok")
    assert tiny_tokenizer.decode([BOS_ID, *ids, IM_END_ID, ENDOFTEXT_ID]) == "ok"


def test_decode_can_keep_special_tokens(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("<|im_start|>user\nhi<|im_end|>")
    assert tiny_tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"


def test_token_strings_are_the_vocabularys(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("<|im_start|>hi there")
    strings = tiny_tokenizer.token_strings(ids)
    assert strings[0] == "<|im_start|>" and len(strings) == len(ids)
    assert "".join(strings[1:]).replace("Ġ", " ") == "hi there"  # byte-level: Ġ is a space
    with pytest.raises(ValueError, match="no token 1000000"):
        tiny_tokenizer.token_strings([1_000_000])


def test_continue_final_message_ends_inside_it(tiny_tokenizer: Tokenizer) -> None:
    messages = [
        {"role": "user", "content": "Name a city."},
        {"role": "assistant", "content": "The city is"},
    ]
    ids = tiny_tokenizer.apply_chat_template(
        messages, add_generation_prompt=False, continue_final_message=True
    )
    text = tiny_tokenizer.decode(ids, skip_special_tokens=False)
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\nThe city is")


def test_template_variables_reach_the_template(tmp_path: Path) -> None:
    template = (
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}"
    )
    tok = with_template(tmp_path, template)
    messages = [{"role": "user", "content": "Hi"}]
    assert rendered(tok, messages) == "Hi"
    assert rendered(tok, messages, variables={"enable_thinking": False}) == "Hi/no_think"


def test_reserved_template_variables_are_the_renderers_own() -> None:
    assert {"tokenize", "chat_template", "messages", "tools"} <= RESERVED_TEMPLATE_VARIABLES
    assert {"enable_thinking", "bos_token", "self", "kwargs"}.isdisjoint(
        RESERVED_TEMPLATE_VARIABLES
    )


def test_chat_prompt_has_exactly_one_bos(tiny_tokenizer: Tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    ids = tiny_tokenizer.apply_chat_template(messages)
    expected = "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    assert ids == tiny_tokenizer.encode(expected + "<|im_start|>assistant\n")
    assert ids[0] == BOS_ID and ids[1] == IM_START_ID


def test_template_from_chat_template_jinja(tmp_path: Path) -> None:
    tok = with_template(tmp_path, ALTERNATING, template_file=True)
    assert rendered(tok, [{"role": "user", "content": "hi"}]) == "[user] hi\n[assistant] "


def test_no_template_falls_back_to_chatml(tmp_path: Path) -> None:
    tok = with_template(tmp_path, None)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant"}])
    chatml = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    assert ids == tok.encode(chatml + "<|im_start|>assistant\n")
    assert "<|im_start|>" in CHATML_TEMPLATE


def test_content_parts_are_joined(tiny_tokenizer: Tokenizer) -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    ids = tiny_tokenizer.apply_chat_template([{"role": "user", "content": parts}])
    assert ids == tiny_tokenizer.apply_chat_template([{"role": "user", "content": "one\ntwo"}])


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "image_url", "image_url": {"url": "http://x"}}],
        [{"type": "text"}],
        ["plain string part"],
        42,
    ],
)
def test_unusable_content_is_refused(tiny_tokenizer: Tokenizer, content: object) -> None:
    with pytest.raises(ChatTemplateError):
        tiny_tokenizer.apply_chat_template([{"role": "user", "content": content}])


def test_extra_keys_pass_through_and_tool_arguments_are_decoded(tmp_path: Path) -> None:
    tok = with_template(tmp_path, ECHO_EXTRAS)
    call: dict[str, Any] = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"x": 1}'},
    }
    bad = {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "hi", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call, bad]},
        {"role": "tool", "content": "3", "tool_call_id": "call_1"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert rendered(tok, messages, tools=tools) == (
        'user|hi|ann||\nassistant||||call_1:f{"x": 1}call_2:g"not json"\ntool|3||call_1|\ntool:f\n'
    )
    assert call["function"]["arguments"] == '{"x": 1}'  # the caller's messages are left alone


def test_template_raise_exception_becomes_chat_template_error(tmp_path: Path) -> None:
    tok = with_template(tmp_path, ALTERNATING)
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError) as caught:
        tok.apply_chat_template(messages)
    assert (
        str(caught.value) == "Conversation roles must alternate user/assistant/user/assistant/..."
    )
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m.content }",  # syntax error
        "{{ messages[0].nothing.deeper }}",  # undefined
        "{{ messages[0].content + 1 }}",  # a type error inside the template
    ],
)
def test_broken_templates_become_chat_template_error(tmp_path: Path, template: str) -> None:
    tok = with_template(tmp_path, template)
    with pytest.raises(ChatTemplateError, match="chat template error"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])


def test_empty_conversation_is_refused(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(ChatTemplateError):
        tiny_tokenizer.apply_chat_template([])


def test_detokenizer_skips_eos_text(tiny_tokenizer: Tokenizer) -> None:
    det = tiny_tokenizer.detokenizer()
    assert det.push([*tiny_tokenizer.encode("done"), IM_END_ID]) == "done"
    assert det.flush() == ""


BRACKETS = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "


def test_a_chat_template_in_place_of_the_models(tmp_path: Path) -> None:
    directory = make_tokenizer_dir(tmp_path, chat_template=ALTERNATING)
    tok = Tokenizer.from_path(directory, chat_template=BRACKETS)
    assert rendered(tok, [{"role": "user", "content": "hi"}]) == "[user] hi\n[assistant] "


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m.content }",  # syntax error
        "{{ raise_exception('needs a system message') }}",  # refuses a lone user message
    ],
)
def test_a_chat_template_that_cannot_render_a_chat_is_refused(
    tmp_path: Path, template: str
) -> None:
    with pytest.raises(ValueError, match="does not render a one-message chat"):
        Tokenizer.from_path(make_tokenizer_dir(tmp_path), chat_template=template)


def test_a_chat_template_is_a_file_or_jinja(tmp_path: Path) -> None:
    (tmp_path / "template.jinja").write_text(BRACKETS)
    assert read_chat_template(str(tmp_path / "template.jinja")) == BRACKETS
    assert read_chat_template(BRACKETS) == BRACKETS
    assert read_chat_template("{{ messages }}") == "{{ messages }}"
    with pytest.raises(ValueError, match="neither a file nor a Jinja template"):
        read_chat_template(str(tmp_path / "missing.jinja"))
    (tmp_path / "binary.jinja").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="cannot read the chat template"):
        read_chat_template(str(tmp_path / "binary.jinja"))
