from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from tokenizers import decoders

from headrace.text import TOOL_CALL_FORMATS, FunctionSpec, Tokenizer
from headrace.text.grammar import CompiledGrammar, GrammarCompiler, GrammarError
from tests.guide import WEATHER_PARAMETERS

HERMES = TOOL_CALL_FORMATS["hermes"]
WEATHER = WEATHER_PARAMETERS
WEATHER_TOOL = FunctionSpec("get_weather", WEATHER)
ADD_TOOL = FunctionSpec(
    "add",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
)
# Parameters with a keyword llguidance cannot enforce: a strict grammar refuses them.
TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    "required": ["tags"],
}


@pytest.fixture(scope="module")
def compiler(tiny_tokenizer: Tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tiny_tokenizer)


def accepts(grammar: CompiledGrammar, tokenizer: Tokenizer, text: str) -> bool:
    """Whether `text`, tokenized, is a complete output of `grammar`."""
    matcher = grammar.matcher()
    return matcher.consume_tokens(tokenizer.encode(text)) and matcher.is_accepting()


def call(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_json_object_accepts_objects_only(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.json_object()
    assert grammar.vocab_size == tiny_tokenizer.vocab_size
    assert accepts(grammar, tiny_tokenizer, json.dumps({"a": [1, {"b": None}], "c": "d"}))
    assert not accepts(grammar, tiny_tokenizer, "[1, 2]")
    assert not accepts(grammar, tiny_tokenizer, '{"a": 1')


def test_json_schema_follows_the_schema(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.json_schema(WEATHER, strict=True)
    assert accepts(grammar, tiny_tokenizer, '{"location": "Paris"}')
    assert not accepts(grammar, tiny_tokenizer, '{"location": 3}')
    assert not accepts(grammar, tiny_tokenizer, "{}")


def test_json_is_written_in_the_layout_of_json_dumps(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.json_schema(WEATHER, strict=True)
    assert not accepts(grammar, tiny_tokenizer, '{ "location" : "Paris" }')
    assert not accepts(grammar, tiny_tokenizer, '{"location":"Paris"}')


def test_a_regex_matches_the_whole_text(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.regex(r"[0-9]{3}-[a-z]+")
    assert accepts(grammar, tiny_tokenizer, "123-abc")
    assert not accepts(grammar, tiny_tokenizer, "12-abc")
    assert not accepts(grammar, tiny_tokenizer, "123-abc!")


def test_a_choice_is_one_of_its_options(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.choice(["positive", "negative", 'say "maybe"'])
    for option in ("positive", "negative", 'say "maybe"'):
        assert accepts(grammar, tiny_tokenizer, option)
    assert not accepts(grammar, tiny_tokenizer, "neutral")
    assert not accepts(grammar, tiny_tokenizer, "positivenegative")
    with pytest.raises(GrammarError, match="at least one option"):
        compiler.choice([])


def test_a_lark_grammar_is_followed(compiler: GrammarCompiler, tiny_tokenizer: Tokenizer) -> None:
    grammar = compiler.lark('start: "(" item ("," item)* ")"\nitem: /[a-z]+/\n')
    assert accepts(grammar, tiny_tokenizer, "(ab,cd)")
    assert not accepts(grammar, tiny_tokenizer, "(ab,)")
    for bad in ("start: missing_rule", "start: ("):
        with pytest.raises(GrammarError, match="Invalid grammar"):
            compiler.lark(bad)
    with pytest.raises(GrammarError, match="Invalid regex"):
        compiler.regex("(unclosed")


def test_a_completed_grammar_allows_only_the_end(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    matcher = compiler.json_schema(WEATHER, strict=True).matcher()
    assert matcher.consume_tokens(tiny_tokenizer.encode('{"location": "Paris"}'))
    assert matcher.is_stopped()


def test_same_schema_twice_is_compiled_once(compiler: GrammarCompiler) -> None:
    first = compiler.json_schema(WEATHER, strict=True)
    assert compiler.json_schema(json.loads(json.dumps(WEATHER)), strict=True) is first
    assert compiler.json_schema(WEATHER, strict=False) is not first
    assert compiler.json_object() is compiler.json_object()
    tools = compiler.tool_calls([WEATHER_TOOL], most_calls=1, format=HERMES)
    assert compiler.tool_calls([WEATHER_TOOL], most_calls=1, format=HERMES) is tools


def test_the_cache_keeps_the_most_recent(tiny_tokenizer: Tokenizer) -> None:
    compiler = GrammarCompiler(tiny_tokenizer, cache_size=2)
    schemas = [{"type": "object", "properties": {name: {"type": "integer"}}} for name in "abc"]
    a, b = (compiler.json_schema(schema, strict=True) for schema in schemas[:2])
    assert compiler.json_schema(schemas[0], strict=True) is a  # a is now the most recent
    compiler.json_schema(schemas[2], strict=True)  # evicts b
    assert compiler.json_schema(schemas[0], strict=True) is a
    assert compiler.json_schema(schemas[1], strict=True) is not b


def test_each_matcher_starts_afresh(compiler: GrammarCompiler, tiny_tokenizer: Tokenizer) -> None:
    grammar = compiler.json_object()
    first = grammar.matcher()
    assert first.consume_tokens(tiny_tokenizer.encode('{"a": 1'))
    assert accepts(grammar, tiny_tokenizer, "{}")


def test_tool_call_names_go_with_their_arguments(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    grammar = compiler.tool_calls([WEATHER_TOOL, ADD_TOOL], most_calls=1, format=HERMES)
    assert accepts(grammar, tiny_tokenizer, call("get_weather", {"location": "Paris"}))
    assert accepts(grammar, tiny_tokenizer, call("add", {"a": 1, "b": 2}))
    assert not accepts(grammar, tiny_tokenizer, call("add", {"location": "Paris"}))
    assert not accepts(grammar, tiny_tokenizer, call("get_weather", {"a": 1, "b": 2}))
    assert not accepts(grammar, tiny_tokenizer, call("subtract", {"a": 1, "b": 2}))
    assert not accepts(grammar, tiny_tokenizer, "I will not call a tool.")


def test_parallel_tool_calls_allow_several(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    two = call("add", {"a": 1, "b": 2}) + "\n" + call("get_weather", {"location": "Oslo"})
    tools = [WEATHER_TOOL, ADD_TOOL]
    assert accepts(compiler.tool_calls(tools, most_calls=2, format=HERMES), tiny_tokenizer, two)
    assert not accepts(compiler.tool_calls(tools, most_calls=1, format=HERMES), tiny_tokenizer, two)


def test_tools_without_parameters_take_empty_arguments(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    now = FunctionSpec("now", {"type": "object", "properties": {}})
    grammar = compiler.tool_calls([now], most_calls=1, format=TOOL_CALL_FORMATS["generic"])
    assert accepts(grammar, tiny_tokenizer, call("now", {}))
    assert not accepts(grammar, tiny_tokenizer, call("now", {"tz": "UTC"}))


def test_a_format_no_grammar_writes_is_a_value_error(compiler: GrammarCompiler) -> None:
    with pytest.raises(ValueError, match="mistral"):
        compiler.tool_calls([WEATHER_TOOL], most_calls=1, format=TOOL_CALL_FORMATS["mistral"])


def test_a_strict_tool_refuses_what_the_grammar_cannot_enforce(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    lenient = FunctionSpec("tag", TAGS)
    strict = dataclasses.replace(lenient, strict=True)
    # Compiled and cached first: the strict tool must not be handed this grammar.
    grammar = compiler.tool_calls([lenient], most_calls=1, format=HERMES)
    assert accepts(grammar, tiny_tokenizer, call("tag", {"tags": ["a", "a"]}))  # not enforced
    with pytest.raises(GrammarError, match=r"tool 'tag': .*uniqueItems"):
        compiler.tool_calls([strict], most_calls=1, format=HERMES)


def test_each_tool_is_as_strict_as_it_asks(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    lenient, strict = FunctionSpec("tag", TAGS), FunctionSpec("tag", TAGS, strict=True)
    strict_weather = dataclasses.replace(WEATHER_TOOL, strict=True)
    # A strict tool is refused beside lenient ones: their leniency is not its.
    with pytest.raises(GrammarError, match="tool 'tag'"):
        compiler.tool_calls([WEATHER_TOOL, strict], most_calls=1, format=HERMES)
    # A lenient tool compiles beside strict ones, which are still enforced.
    grammar = compiler.tool_calls([strict_weather, lenient], most_calls=1, format=HERMES)
    assert accepts(grammar, tiny_tokenizer, call("tag", {"tags": ["a", "a"]}))
    assert accepts(grammar, tiny_tokenizer, call("get_weather", {"location": "Oslo"}))
    assert not accepts(grammar, tiny_tokenizer, call("get_weather", {"location": 1}))


BAD_SCHEMAS: dict[str, Any] = {
    "unknown type": {"type": "strin"},
    "type not a string": {"type": 5},
    "properties not an object": {"type": "object", "properties": [1, 2]},
    "unknown $ref": {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}},
    "remote $ref": {"$ref": "http://example.com/schema.json"},
    "bad pattern": {"type": "string", "pattern": "(("},
    "unsatisfiable": {"type": "string", "minLength": 5, "maxLength": 2},
    "too deep": json.loads('{"type":"object","properties":{"a":' * 300 + "{}" + "}}" * 300),
    "not JSON": {"enum": {1, 2}},
    "NaN": {"type": "number", "minimum": float("nan")},
    "not an object": [{"type": "string"}],
}


@pytest.mark.parametrize("schema", BAD_SCHEMAS.values(), ids=BAD_SCHEMAS.keys())
def test_bad_schemas_are_grammar_errors(compiler: GrammarCompiler, schema: Any) -> None:
    with pytest.raises(GrammarError):
        compiler.json_schema(schema, strict=True)


def test_strict_refuses_what_it_cannot_enforce(compiler: GrammarCompiler) -> None:
    schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    with pytest.raises(GrammarError, match="not"):
        compiler.json_schema(schema, strict=True)
    compiler.json_schema(schema, strict=False)


def test_recursive_and_huge_schemas_compile(compiler: GrammarCompiler) -> None:
    tree = {
        "$defs": {"node": {"type": "object", "properties": {"kids": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    compiler.json_schema(tree, strict=True)
    compiler.json_schema({"enum": [f"value{i}" for i in range(5000)]}, strict=True)


BAD_TOOLS: dict[str, list[FunctionSpec]] = {
    "no tools": [],
    "no name": [FunctionSpec("", WEATHER)],
    "duplicate names": [FunctionSpec("a", WEATHER), FunctionSpec("a", WEATHER)],
    "bad parameters schema": [FunctionSpec("a", {"type": "strin"})],
    "bad strict parameters schema": [FunctionSpec("a", {"type": "strin"}, strict=True)],
}


@pytest.mark.parametrize("tools", BAD_TOOLS.values(), ids=BAD_TOOLS.keys())
def test_bad_tools_are_grammar_errors(compiler: GrammarCompiler, tools: list[FunctionSpec]) -> None:
    with pytest.raises(GrammarError):
        compiler.tool_calls(tools, most_calls=1, format=HERMES)


def test_objects_get_only_the_properties_they_list(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    nested = {"type": "object", "properties": {"inner": WEATHER}}
    grammar = compiler.json_schema(nested, strict=False)
    assert accepts(grammar, tiny_tokenizer, '{"inner": {"location": "Oslo"}}')
    assert not accepts(grammar, tiny_tokenizer, '{"inner": {"location": "Oslo", "x": 1}}')
    assert not accepts(grammar, tiny_tokenizer, '{"x": 1}')
    assert "additionalProperties" not in WEATHER  # the caller's schema is untouched


def test_objects_open_by_their_schema_stay_open(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    open_schema = {**WEATHER, "additionalProperties": {"type": "integer"}}
    grammar = compiler.json_schema(open_schema, strict=True)
    assert accepts(grammar, tiny_tokenizer, '{"location": "Oslo", "x": 1}')
    both = {"allOf": [WEATHER, {"properties": {"days": {"type": "integer"}}}]}
    grammar = compiler.json_schema(both, strict=True)
    assert accepts(grammar, tiny_tokenizer, '{"location": "Oslo", "days": 3}')


def with_decoder(tokenizer: Tokenizer, decoder: decoders.Decoder) -> Tokenizer:
    hf = copy.deepcopy(tokenizer.hf)
    hf.backend_tokenizer.decoder = decoder
    return Tokenizer(hf, tokenizer.eos_token_ids)


def test_a_byte_level_decoder_wrapped_in_a_sequence_is_read_as_byte_level(
    tiny_tokenizer: Tokenizer,
) -> None:
    # What transformers 5.17 makes of a GGUF byte-level BPE.
    wrapped = decoders.Sequence(
        [
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Replace("\u2581", " "),
            decoders.ByteLevel(),
        ]
    )
    tokenizer = with_decoder(tiny_tokenizer, wrapped)
    grammar = GrammarCompiler(tokenizer).json_schema(WEATHER, strict=True)
    assert accepts(grammar, tokenizer, '{"location": "New York"}')


def test_a_vocabulary_the_grammar_engine_misreads_is_refused(tiny_tokenizer: Tokenizer) -> None:
    sentencepiece_style = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    with pytest.raises(ValueError, match="vocabulary"):
        GrammarCompiler(with_decoder(tiny_tokenizer, sentencepiece_style))


def test_tool_calls_stop_at_most_calls(
    compiler: GrammarCompiler, tiny_tokenizer: Tokenizer
) -> None:
    one = call("add", {"a": 1, "b": 2})
    grammar = compiler.tool_calls([WEATHER_TOOL, ADD_TOOL], most_calls=2, format=HERMES)
    assert accepts(grammar, tiny_tokenizer, one)
    assert accepts(grammar, tiny_tokenizer, one + "\n" + one)
    assert not accepts(grammar, tiny_tokenizer, one + "\n" + one + "\n" + one)
    with pytest.raises(ValueError, match="most_calls"):
        compiler.tool_calls([WEATHER_TOOL], most_calls=0, format=HERMES)
