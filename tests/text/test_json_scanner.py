from __future__ import annotations

import json

import pytest

from headrace.text.json_scanner import JsonScanner

VALUES = [
    '"plain"',
    '"say \\"hi\\" {not a brace} [nor this]"',
    '"ends in a backslash \\\\"',
    '"\\u00e9 \\n 你好 😀"',
    "{}",
    '{"a": {"b": [1, {"c": "}"}]}, "d": "\\"{"}',
    '[1, [2, [3]], "]"]',
]
SCALARS = ["42", "-1.5e3", "true", "false", "null"]


def scan(pieces: list[str]) -> tuple[int, bool]:
    """Feeds the pieces in turn; returns the characters consumed in all and whether it ended."""
    scanner, consumed = JsonScanner(), 0
    for piece in pieces:
        consumed += scanner.feed(piece)
        if scanner.done:
            break
    return consumed, scanner.done


def splits(text: str) -> list[list[str]]:
    return [[text], list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]


@pytest.mark.parametrize("value", VALUES)
def test_finds_the_end_of_a_value_however_it_is_split(value: str) -> None:
    json.loads(value)
    for pieces in splits(value + ', "after": 1}'):
        assert scan(pieces) == (len(value), True), pieces


@pytest.mark.parametrize("value", VALUES)
def test_an_unfinished_value_is_not_done(value: str) -> None:
    for end in range(len(value)):
        consumed, done = scan(list(value[:end]))
        assert (consumed, done) == (end, False)


@pytest.mark.parametrize("value", SCALARS)
@pytest.mark.parametrize("after", [",", "}", "]", " ", "\n"])
def test_a_scalar_ends_before_the_next_character(value: str, after: str) -> None:
    for pieces in splits(value + after + "rest"):
        assert scan(pieces) == (len(value), True)
    assert scan([value]) == (len(value), False)  # more digits may follow


def test_feeds_from_an_offset_and_reports_its_kind() -> None:
    scanner = JsonScanner()
    assert scanner.kind is None
    assert scanner.feed('xx{"a": "}', 2) == 10
    assert scanner.kind == "container" and not scanner.done
    assert scanner.feed('"} tail') == 2
    assert scanner.done
    assert scanner.feed("more") == 0
