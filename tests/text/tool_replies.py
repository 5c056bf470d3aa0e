"""Tool-call replies for parser tests: cases, running them in pieces, checking the outcome.

`parse(fmt, pieces)` pushes text pieces through a fresh parser and checks the events' invariants
(calls indexed 0, 1, 2 in order, each started once before its arguments, nothing empty, events
agreeing with `content` and `tool_calls`); `check(case, outcome)` compares with what the case
expects. `through(tokenizer, ...)` gets the pieces from the real detokenizer, token by token.
`random_reply(rng)` writes a random well-formed reply in a random format.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from headrace.text import (
    TOOL_CALL_FORMATS,
    ContentDelta,
    ParsedToolCall,
    Tokenizer,
    ToolCallArguments,
    ToolCallEvent,
    ToolCallStart,
)

__all__ = [
    "MARKUP",
    "Case",
    "Outcome",
    "check",
    "hermes",
    "parse",
    "random_pieces",
    "random_reply",
    "through",
]

# Markers of every format: none may ever reach the content of a well-formed reply.
MARKUP = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>", '"name"')


@dataclass(frozen=True)
class Case:
    # An id for the test report.
    id: str
    # The format the text is written in.
    fmt: str
    # The model's whole reply.
    text: str
    # The content the reply should give.
    content: str
    # (name, arguments) of each call, in order.
    calls: list[tuple[str, Any]] = field(default_factory=list)


def hermes(name: str, arguments: Any, *, first: str = "name") -> str:
    call = {"name": name, "arguments": arguments}
    if first == "arguments":
        call = {"arguments": arguments, "name": name}
    return f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"


@dataclass(frozen=True)
class Outcome:
    # Every event, in order.
    events: list[ToolCallEvent]
    # The parser's content and calls after finish().
    content: str
    calls: list[ParsedToolCall]


def parse(fmt: str, pieces: list[str]) -> Outcome:
    """Pushes the pieces, finishes, and checks the events' invariants against the result."""
    parser = TOOL_CALL_FORMATS[fmt].parser()
    events = [event for piece in pieces for event in parser.push(piece)]
    events += parser.finish()
    names: list[str] = []
    arguments: list[str] = []
    for event in events:
        match event:
            case ContentDelta(text=text):
                assert text
            case ToolCallStart(index=index, name=name):
                assert index == len(names)  # 0, 1, 2, each once, in order
                names.append(name)
                arguments.append("")
            case ToolCallArguments(index=index, text=text):
                assert text and index == len(names) - 1  # after its start, before the next
                arguments[index] += text
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert content == parser.content
    assert [(c.index, c.name, c.arguments) for c in parser.tool_calls] == list(
        zip(range(len(names)), names, arguments, strict=True)
    )
    return Outcome(events, content, parser.tool_calls)


def check(case: Case, outcome: Outcome) -> None:
    assert outcome.content == case.content
    assert [(call.name, json.loads(call.arguments)) for call in outcome.calls] == case.calls
    assert all(call.complete for call in outcome.calls)
    if case.calls:  # a reply with calls: no markup anywhere in its content
        for event in outcome.events:
            if isinstance(event, ContentDelta):
                assert not any(marker in event.text for marker in MARKUP), event


def random_pieces(text: str, rng: random.Random) -> list[str]:
    pieces, at = [], 0
    while at < len(text):
        step = rng.randrange(0, 8)
        pieces.append(text[at : at + step])
        at += step
    return pieces


def through(tokenizer: Tokenizer, case: Case, rng: random.Random, longest: int) -> Outcome:
    """The reply's tokens, a random 1..`longest` at a time, detokenized and parsed."""
    parser_markers = TOOL_CALL_FORMATS[case.fmt].parser().markers
    detokenizer = tokenizer.detokenizer(keep_special=parser_markers)
    ids = tokenizer.encode(case.text)
    pieces, at = [], 0
    while at < len(ids):
        step = rng.randrange(1, longest + 1)
        pieces.append(detokenizer.push(ids[at : at + step]))
        at += step
    pieces.append(detokenizer.flush())
    assert "".join(pieces) == case.text
    return parse(case.fmt, pieces)


STRING_PIECES = ["a", " ", '"', "\\", "{", "}", "[", "]", ":", ",", "\n", "你好", "😀", "é"]
MARKUP_PIECES = ["</tool_call>", "<tool_call>", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>"]
CONTENT_PIECES = ["Sure", " ", "\n", "<", "<tool", "</tool_call", "[", "[TOOL", "{", "}", "😀"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return "".join(rng.choice(STRING_PIECES + MARKUP_PIECES) for _ in range(rng.randrange(6)))
    if kind == 1:
        return rng.choice([0, -7, 3.25, 1e-9, 12345678901234])
    if kind == 2:
        return rng.choice([True, False])
    if kind == 3:
        return None
    if kind == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return random_object(rng, depth + 1)


def random_object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = ["".join(rng.choice(STRING_PIECES) for _ in range(rng.randrange(1, 4))) for _ in "abc"]
    return {key: random_json(rng, depth) for key in keys[: rng.randrange(4)]}


def dumps(rng: random.Random, value: Any) -> str:
    indent = rng.choice([None, None, 2])
    separators = rng.choice([None, (",", ":")])
    ascii_only = rng.random() < 0.5
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=ascii_only)


def random_reply(rng: random.Random) -> Case:
    fmt = rng.choice(["hermes", "generic", "llama3_json", "mistral", "mistral-args"])
    calls = [(f"fn_{i}", random_object(rng)) for i in range(rng.randrange(1, 4))]
    objects = []
    for name, arguments in calls:
        items = [("name", name), ("arguments" if fmt != "llama3_json" else "parameters", arguments)]
        objects.append(dict(items if rng.random() < 0.7 else items[::-1]))
    gap = rng.choice(["", "\n", " \n\n"])
    content = "".join(rng.choice(CONTENT_PIECES) for _ in range(rng.randrange(5)))
    if fmt in ("hermes", "generic"):
        text = content + gap.join(
            f"<tool_call>{gap}{dumps(rng, o)}{gap}</tool_call>" for o in objects
        )
    elif fmt == "llama3_json":
        content = ""
        text = gap + rng.choice(["", "<|python_tag|>"])
        text += rng.choice([";", "; ", ";\n", "\n"]).join(dumps(rng, o) for o in objects)
    elif fmt == "mistral":
        text = content + "[TOOL_CALLS]" + gap + dumps(rng, objects)
    else:
        fmt = "mistral"
        text = content + "".join(f"[TOOL_CALLS]{n}[ARGS]{dumps(rng, a)}" for n, a in calls)
    return Case(f"random-{fmt}", fmt, text + rng.choice(["", "\n"]), content, calls)
