"""Tool-call parsing: every format, in every kind of split, through the real tokenizers too."""

from __future__ import annotations

import json
import random

import pytest

from headrace.text import (
    TOOL_CALL_FORMATS,
    ContentDelta,
    ParsedToolCall,
    Tokenizer,
    ToolCallArguments,
    ToolCallStart,
    get_tool_call_format,
)
from tests.text.tool_replies import Case, check, hermes, parse, random_pieces, through

WEATHER = {"location": "Berlin"}
NESTED = {
    "path": "C:\\temp\\a.txt",
    "text": 'say "hi" {not a brace} [nor this] \\" }',
    "opts": {"deep": [1, {"k": None}, [], {}], "flag": True, "n": -1.5e3},
}
UNICODE = {"text": "你好\uff0c世界 😀👍🏽 Grüße", "escaped": "\u00e9\n\t"}


CASES = [
    Case(
        "hermes-content-then-call",
        "hermes",
        "Let me check the weather.\n" + hermes("get_weather", WEATHER),
        "Let me check the weather.\n",
        [("get_weather", WEATHER)],
    ),
    Case(
        "hermes-parallel",
        "hermes",
        "\n\n".join(hermes(f"f{i}", {"i": i}) for i in range(3)) + "\n",
        "",
        [(f"f{i}", {"i": i}) for i in range(3)],
    ),
    Case(
        "hermes-arguments-before-name",
        "hermes",
        hermes("search", NESTED, first="arguments"),
        "",
        [("search", NESTED)],
    ),
    Case("hermes-unicode", "hermes", hermes("translate", UNICODE), "", [("translate", UNICODE)]),
    Case(
        "hermes-tight-no-closer",
        "hermes",
        '<tool_call>{"name":"f","arguments":{"a":[1,2,{"b":"}"}]}}',
        "",
        [("f", {"a": [1, 2, {"b": "}"}]})],
    ),
    Case(
        "hermes-text-after",
        "hermes",
        hermes("f", {}) + "\n\nI asked for it.",
        "I asked for it.",
        [("f", {})],
    ),
    Case(
        "hermes-markers-that-are-text",
        "hermes",
        "Use <tools> or <tool and <tool_c, not </tool_call or <tool_call",
        "Use <tools> or <tool and <tool_c, not </tool_call or <tool_call",
    ),
    Case(
        "generic",
        "generic",
        "Sure. " + hermes("get_weather", WEATHER),
        "Sure. ",
        [("get_weather", WEATHER)],
    ),
    Case(
        "generic-parallel-arguments-first",
        "generic",
        hermes("a", NESTED, first="arguments") + hermes("b", UNICODE) + hermes("c", {}),
        "",
        [("a", NESTED), ("b", UNICODE), ("c", {})],
    ),
    Case(
        "llama-one",
        "llama3_json",
        '{"name": "get_weather", "parameters": {"location": "Berlin"}}',
        "",
        [("get_weather", WEATHER)],
    ),
    Case(
        "llama-parallel-tag",
        "llama3_json",
        ' <|python_tag|>{"name": "a", "arguments": '
        + json.dumps(NESTED)
        + '}; {"parameters": '
        + json.dumps(UNICODE, ensure_ascii=False)
        + ', "name": "b"};{"name": "c", "parameters": {}}',
        "",
        [("a", NESTED), ("b", UNICODE), ("c", {})],
    ),
    Case(
        "llama-text-first",
        "llama3_json",
        'The call would be {"name": "f", "parameters": {}}',
        'The call would be {"name": "f", "parameters": {}}',
    ),
    Case("llama-json-answer", "llama3_json", '\n{"answer": 42}', '\n{"answer": 42}'),
    Case(
        "mistral-array",
        "mistral",
        'Checking. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Berlin"}, '
        '"id": "a1b2c3d4e"}, {"name": "b", "arguments": '
        + json.dumps(UNICODE)
        + '}, {"id": "x", "name": "c", "arguments": {}}]',
        "Checking. ",
        [("get_weather", WEATHER), ("b", UNICODE), ("c", {})],
    ),
    Case(
        "mistral-args",
        "mistral",
        "[TOOL_CALLS]get_weather[ARGS]"
        + json.dumps(WEATHER)
        + "[TOOL_CALLS]nested[ARGS]"
        + json.dumps(NESTED),
        "",
        [("get_weather", WEATHER), ("nested", NESTED)],
    ),
    Case("mistral-not-a-marker", "mistral", "a [TOOL_CALL] [TOOLS] b", "a [TOOL_CALL] [TOOLS] b"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_whole_and_char_by_char(case: Case) -> None:
    check(case, parse(case.fmt, [case.text]))
    check(case, parse(case.fmt, list(case.text)))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_every_cut_in_two(case: Case) -> None:
    for cut in range(1, len(case.text)):
        check(case, parse(case.fmt, [case.text[:cut], case.text[cut:]]))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_random_splits(case: Case) -> None:
    rng = random.Random(case.id)
    for _ in range(40):
        check(case, parse(case.fmt, random_pieces(case.text, rng)))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_through_the_tiny_tokenizer(special_tokenizer: Tokenizer, case: Case) -> None:
    rng = random.Random(case.id)
    for longest in (1, 1, 3, 6):
        check(case, through(special_tokenizer, case, rng, longest))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_through_smollm2s_tokenizer(smollm_tokenizer: Tokenizer, case: Case) -> None:
    rng = random.Random(case.id)
    for longest in (1, 4):
        check(case, through(smollm_tokenizer, case, rng, longest))


def test_special_markers_are_lost_unless_kept(special_tokenizer: Tokenizer) -> None:
    ids = special_tokenizer.encode('[TOOL_CALLS]f[ARGS]{"a": 1}')
    assert special_tokenizer.decode(ids) == 'f{"a": 1}'
    plain = special_tokenizer.detokenizer()
    assert plain.push(ids) + plain.flush() == 'f{"a": 1}'
    kept = special_tokenizer.detokenizer(keep_special=TOOL_CALL_FORMATS["mistral"].parser().markers)
    assert kept.push(ids) + kept.flush() == '[TOOL_CALLS]f[ARGS]{"a": 1}'


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("hermes", 'Hi <tool_call>\n{"name": "get_weather", "arguments": {"location": "Berlin"}}'),
        ("hermes", '<tool_call>{"arguments": {"location": "Berlin"}, "name": "get_weather"}'),
        ("llama3_json", '{"name": "get_weather", "parameters": {"location": "Berlin"}}'),
        ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Berlin"}}]'),
        ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"location": "Berlin"}'),
    ],
)
def test_arguments_stream_as_they_are_generated(fmt: str, text: str) -> None:
    parser = TOOL_CALL_FORMATS[fmt].parser()
    streamed = ""
    for at, char in enumerate(text, start=1):
        for event in parser.push(char):
            if isinstance(event, ToolCallArguments):
                streamed += event.text
        if text[:at].endswith('"Ber'):
            break
    if '"arguments": {"location"' in text and text.index('"arguments"') < text.index('"name"'):
        assert streamed == ""  # arguments before the name wait for it
    else:
        assert streamed == '{"location": "Ber'  # the call's JSON is far from closed


def test_each_push_gives_few_events() -> None:
    parser = TOOL_CALL_FORMATS["hermes"].parser()
    events = parser.push("Hi!\n" + hermes("f", {"a": 1}) + hermes("g", {}))
    assert events == [
        ContentDelta("Hi!\n"),
        ToolCallStart(0, "f"),
        ToolCallArguments(0, '{"a": 1}'),
        ToolCallStart(1, "g"),
        ToolCallArguments(1, "{}"),
    ]
    assert parser.finish() == []


def test_text_between_and_after_calls() -> None:
    text = "A " + hermes("f", {}) + "\n  B <tool" + hermes("g", {}) + " \n C"
    for pieces in ([text], list(text)):
        outcome = parse("hermes", pieces)
        assert outcome.content == "A B <toolC"
        assert [call.name for call in outcome.calls] == ["f", "g"]


def test_a_call_cut_off_after_its_name_stays_incomplete() -> None:
    text = '<tool_call>{"name": "f", "arguments": {"a": [1, 2'
    outcome = parse("hermes", list(text))
    assert outcome.content == ""
    assert outcome.calls == [ParsedToolCall(0, "f", '{"a": [1, 2', complete=False)]
    outcome = parse("hermes", [text[:-16]])  # cut before the arguments began
    assert outcome.calls == [ParsedToolCall(0, "f", "", complete=False)]
    outcome = parse("hermes", [text + "]}"])  # cut after the arguments, inside the call
    assert outcome.calls == [ParsedToolCall(0, "f", '{"a": [1, 2]}', complete=True)]


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("hermes", 'Hi <tool_call>{"na'),  # cut off before the name was complete
        ("hermes", 'Hi <tool_call>{"arguments": {"a": 1}, "name": "f'),
        ("hermes", "Hi <tool_ca"),  # a marker that never completed
        ("hermes", "<tool_call>not json</tool_call> after"),
        ("hermes", '<tool_call>{"other": 1, "name": "f", "arguments": {}}</tool_call>'),
        ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),  # no name
        ("hermes", '<tool_call>{"name": 42, "arguments": {}}</tool_call>'),
        ("llama3_json", '<|python_tag|>brave_search.call(query="x")'),
        ("llama3_json", "  \n"),
        ("mistral", "[TOOL_CALLS]not a name[ARGS]{}"),
        ("mistral", "[TOOL_CALLS]f[ARGS]not json"),
        ("mistral", "[TOOL_CALLS]get_wea"),
    ],
)
def test_text_that_is_no_call_is_given_back_as_content(fmt: str, text: str) -> None:
    for pieces in ([text], list(text)):
        outcome = parse(fmt, pieces)
        assert (outcome.content, outcome.calls) == (text, [])


def test_odd_but_usable_calls() -> None:
    text = (
        '<tool_call>{"id": "1", "type": "function", "name": "a"}</tool_call>'  # no arguments
        '<tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}</tool_call>'  # arguments as a string
        '<tool_call>{"name": "c", "arguments": null, "extra": {"y": "}"}}</tool_call>'
        '<tool_call>{"name": "d", "arguments": {"z": 1}, "arguments": {"z": 2}}</tool_call>'
        '<tool_call>{"name": "e", "arguments": {} oops</tool_call>'  # broken after the arguments
    )
    for pieces in ([text], list(text)):
        outcome = parse("hermes", pieces)
        calls = [(call.name, json.loads(call.arguments)) for call in outcome.calls]
        assert calls == [("a", {}), ("b", {"x": 1}), ("c", {}), ("d", {"z": 1}), ("e", {})]
        assert outcome.content == "oops</tool_call>"


def test_push_after_finish_is_refused() -> None:
    parser = TOOL_CALL_FORMATS["generic"].parser()
    assert parser.finish() == []
    assert parser.finish() == []
    with pytest.raises(RuntimeError):
        parser.push("x")


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tool-call format 'pythonic'"):
        get_tool_call_format("pythonic")


def test_smollm2_reply_through_its_detokenizer(smollm_tokenizer: Tokenizer) -> None:
    """A reply as SmolLM2 would generate it: token by token, ending with its EOS."""
    text = "I will look it up.\n" + hermes("get_weather", {"location": "Zürich"})
    ids = [*smollm_tokenizer.encode(text), 2]
    parser = smollm_tokenizer.tool_call_format.parser()
    detokenizer = smollm_tokenizer.detokenizer(keep_special=parser.markers)
    events = [e for token in ids for e in parser.push(detokenizer.push([token]))]
    events += parser.push(detokenizer.flush()) + parser.finish()
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    pieces = [e.text for e in events if isinstance(e, ToolCallArguments)]
    assert starts == [ToolCallStart(0, "get_weather")]
    assert len(pieces) > 3  # streamed, token by token
    assert json.loads("".join(pieces)) == {"location": "Zürich"}
    assert parser.content == "I will look it up.\n"
