"""Grammars for constrained decoding: any JSON object, a JSON schema, or forced tool calls.

A `GrammarCompiler` is bound to one tokenizer and built once per server. It turns a
response_format or a tool_choice into a `CompiledGrammar`, which the engine runs token by token
(a matcher per request, see headrace.engine.grammar_bitmask). llguidance does the work; it
builds its lexer lazily, so compiling is cheap (about a millisecond) but not free, and compiled
grammars are kept in a small LRU keyed by what they were compiled from.

Two choices keep small models from rambling on: JSON is generated in the layout of Python's
`json.dumps` (`{"key": "value", "n": 1}`), and an object that lists its properties gets only
those, unless its schema says otherwise (additionalProperties defaults to false, as in OpenAI's
strict mode). Both narrow what is generated, never what is valid: the output still validates.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np

from headrace.text.function_spec import FunctionSpec
from headrace.text.tokenizer import Tokenizer
from headrace.text.tool_call_format import ToolCallFormat, ToolCallMarkup

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["CompiledGrammar", "GrammarCompiler", "GrammarError"]


class GrammarError(ValueError):
    """A schema or tool list that cannot be turned into a grammar: the client's error."""


@dataclass(frozen=True, eq=False, repr=False)
class CompiledGrammar:
    """A grammar ready to constrain generation; equal only to itself (the cache hands it out)."""

    # What it was compiled from, as the cache keys it: the kind, then canonical JSON.
    key: str
    # Token ids its masks cover: the tokenizer's vocabulary, added tokens included.
    vocab_size: int
    # A matcher at the grammar's start, never advanced; each request runs a copy.
    _template: llguidance.LLMatcher = field(repr=False)

    def matcher(self) -> llguidance.LLMatcher:
        """A fresh matcher at the grammar's start, for one request."""
        return self._template.deep_copy()

    def __repr__(self) -> str:
        key = self.key if len(self.key) <= 80 else self.key[:77] + "..."
        return f"CompiledGrammar({key!r})"


class GrammarCompiler:
    """Compiles response formats and forced tool calls for one tokenizer, caching the results."""

    def __init__(self, tokenizer: Tokenizer, *, cache_size: int = 128) -> None:
        self.vocab_size = tokenizer.vocab_size
        self._ll_tokenizer = _ll_tokenizer(tokenizer)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def json_object(self) -> CompiledGrammar:
        """Any JSON object (response_format {"type": "json_object"})."""
        return self._cached(
            "json_object", "JSON object", partial(_json_grammar, {"type": "object"}, strict=True)
        )

    def json_schema(self, schema: Mapping[str, Any], *, strict: bool) -> CompiledGrammar:
        """JSON valid against `schema` (response_format {"type": "json_schema"}).

        strict: every keyword must be enforced, or GrammarError; otherwise keywords the grammar
        cannot enforce (e.g. "not") are ignored and the output follows the rest.
        """
        if not isinstance(schema, Mapping):
            raise GrammarError("The JSON schema must be a JSON object.")
        key = f"json_schema:strict={strict}:{_canonical(schema)}"
        build = partial(_json_grammar, _closed(schema), strict=strict)
        return self._cached(key, "JSON schema", build)

    def regex(self, pattern: str) -> CompiledGrammar:
        """Text the regular expression `pattern` matches whole (llguidance's regex syntax)."""
        build = partial(_grammar, llguidance.LLMatcher.grammar_from_regex, pattern, "regex")
        return self._cached(f"regex:{pattern}", "regex", build)

    def choice(self, options: Sequence[str]) -> CompiledGrammar:
        """Exactly one of `options`."""
        if not options:
            raise GrammarError("A choice needs at least one option.")
        rule = "start: " + " | ".join(_lark_literal(option) for option in options) + "\n"
        build = partial(_grammar, llguidance.LLMatcher.grammar_from_lark, rule, "choice")
        return self._cached(f"choice:{_canonical(list(options))}", "choice", build)

    def lark(self, grammar: str) -> CompiledGrammar:
        """A sentence of `grammar`, in Lark's syntax as llguidance reads it."""
        build = partial(_grammar, llguidance.LLMatcher.grammar_from_lark, grammar, "grammar")
        return self._cached(f"lark:{grammar}", "grammar", build)

    def tool_calls(
        self,
        functions: Sequence[FunctionSpec],
        *,
        most_calls: int,
        format: ToolCallFormat,
    ) -> CompiledGrammar:
        """From one to `most_calls` calls to `functions`, in `format`, and nothing else.

        Pass only the named function for a named tool_choice. Each call's arguments validate
        against its function's parameters, compiled strict or not as that function asks.
        format: one a grammar can write (its `markup` is not None), else ValueError.
        """
        if format.markup is None:
            raise ValueError(f"no tool-call grammar for format {format.name!r}")
        if most_calls < 1:
            raise ValueError(f"most_calls must be positive, not {most_calls}")
        if not functions:
            raise GrammarError("Tool calls need at least one tool.")
        names = [function.name for function in functions]
        if not all(names):
            raise GrammarError("Each tool must be a function with a name.")
        if len(set(names)) != len(names):
            raise GrammarError("Tool names must be unique.")
        calls = [_call_schema(function) for function in functions]
        key = f"tool_calls:{format.name}:most_calls={most_calls}:{_canonical(calls)}"
        build = partial(_tool_calls_grammar, format.markup, calls, most_calls=most_calls)
        try:
            return self._cached(key, "tool parameters schema", build)
        except GrammarError:
            for function, call in zip(functions, calls, strict=True):
                self._matcher(_json_grammar(call), f"parameters of tool {function.name!r}")
            raise

    def _cached(self, key: str, what: str, build: Callable[[], str]) -> CompiledGrammar:
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
        compiled = CompiledGrammar(key, self.vocab_size, self._matcher(build(), what))
        with self._lock:
            compiled = self._cache.setdefault(key, compiled)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _matcher(self, grammar: str, what: str) -> llguidance.LLMatcher:
        """A matcher at the grammar's start, its first mask computed: some errors show only then."""
        matcher = llguidance.LLMatcher(self._ll_tokenizer, grammar, log_level=0)
        if not matcher.is_error():
            mask = np.empty((self.vocab_size + 31) // 32, dtype=np.int32)
            matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        if matcher.is_error():
            raise GrammarError(f"Invalid {what}: {_one_line(matcher.get_error())}")
        return matcher


def _ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of the tokenizer; ValueError if it would read the tokens' bytes wrong."""
    backend = copy(tokenizer.hf.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    spec = json.loads(backend.to_str())
    # llguidance tells how token strings map to bytes by the decoder's type alone; some
    # transformers versions (5.17) convert a GGUF byte-level BPE with its ByteLevel decoder
    # inside a sentencepiece-style Sequence, which it would read as sentencepiece.
    decoder = spec.get("decoder") or {}
    byte_level = [d for d in decoder.get("decoders") or [] if d.get("type") == "ByteLevel"]
    if decoder.get("type") == "Sequence" and byte_level:
        spec["decoder"] = byte_level[0]
    ll_tokenizer = llguidance.LLTokenizer(
        json.dumps(spec), n_vocab=tokenizer.vocab_size, eos_token=sorted(tokenizer.eos_token_ids)
    )
    probe = 'Hello, world! {"key": ["value", 42, true]}\n\tdone.'
    if ll_tokenizer.decode_str(tokenizer.encode(probe)) != probe:
        raise ValueError("the grammar engine cannot read this tokenizer's vocabulary")
    return ll_tokenizer


def _json_grammar(schema: Mapping[str, Any], *, strict: bool | None = None) -> str:
    """`schema`'s grammar; strict None: the options its "x-guidance" holds."""
    overrides = None if strict is None else _json_options(strict)
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(dict(schema), overrides=overrides)
    except (ValueError, TypeError, RecursionError) as exc:
        raise GrammarError(f"Invalid JSON schema: {exc}") from None


def _grammar(make: Callable[[str], str], source: str, what: str) -> str:
    """llguidance's grammar of `source` (a regex, a Lark grammar), made by `make`."""
    try:
        return make(source)
    except (ValueError, TypeError) as exc:
        raise GrammarError(f"Invalid {what}: {_one_line(str(exc))}") from None


def _call_schema(function: FunctionSpec) -> dict[str, Any]:
    """One call to `function` as JSON, with the options its strictness asks for."""
    return {
        "type": "object",
        "properties": {"name": {"const": function.name}, "arguments": _closed(function.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        "x-guidance": _json_options(function.strict),
    }


def _tool_calls_grammar(
    markup: ToolCallMarkup, call_schemas: Sequence[dict[str, Any]], *, most_calls: int
) -> str:
    # One rule per function, each its own %json, so each keeps its own strictness.
    alternatives = " | ".join(f"call_{index}" for index in range(len(call_schemas)))
    more = most_calls - 1
    calls = f"call ({_lark_literal(markup.separator)} call){{0,{more}}}" if more else "call"
    rules = [
        f"start: {calls}",
        f"call: {_lark_literal(markup.open)} ({alternatives}) {_lark_literal(markup.close)}",
        *(f"call_{index}: %json {_canonical(schema)}" for index, schema in enumerate(call_schemas)),
    ]
    return llguidance.LLMatcher.grammar_from_lark("\n".join(rules) + "\n")


def _json_options(strict: bool) -> JsonCompileOptions:
    """The layout of json.dumps, no free whitespace; unless strict, unenforceable keywords pass."""
    return {
        "whitespace_flexible": False,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": not strict,
    }


# Keywords whose value is a schema or a list of schemas.
_SCHEMA_KEYWORDS = frozenset(
    {"items", "prefixItems", "additionalItems", "contains", "unevaluatedItems"}
    | {"additionalProperties", "unevaluatedProperties", "propertyNames"}
    | {"anyOf", "oneOf", "allOf", "not", "if", "then", "else"}
)
# Keywords whose value maps names to schemas.
_SCHEMA_MAP_KEYWORDS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
# What lets an object have properties it does not list.
_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def _closed(schema: Any) -> Any:
    """A copy of `schema` with additionalProperties false on every object that lists properties
    and says nothing of others (but not directly under allOf, where that would forbid the
    properties other branches list)."""
    try:
        return _close(schema, here=True)
    except RecursionError:
        raise GrammarError("The schema is nested too deeply.") from None


def _close(schema: Any, *, here: bool) -> Any:
    if isinstance(schema, list):
        return [_close(item, here=here) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed = dict(schema)
    for key, value in schema.items():
        if key in _SCHEMA_KEYWORDS:
            closed[key] = _close(value, here=key != "allOf")
        elif key in _SCHEMA_MAP_KEYWORDS and isinstance(value, Mapping):
            closed[key] = {name: _close(item, here=True) for name, item in value.items()}
    properties = schema.get("properties")
    if here and isinstance(properties, Mapping) and not any(k in schema for k in _OPEN_KEYWORDS):
        closed["additionalProperties"] = False
    return closed


def _canonical(value: object) -> str:
    """Compact JSON; keys keep their order, since property order is the order generated."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise GrammarError(f"The schema is not valid JSON: {exc}") from None


def _lark_literal(text: str) -> str:
    # A JSON string literal is a Lark string literal.
    return json.dumps(text)


def _one_line(message: str, limit: int = 300) -> str:
    line = " ".join(message.split()) or "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."
