from __future__ import annotations

import random

import pytest

from headrace.text.stop_matcher import StopMatcher


def reference(text: str, stop: list[str]) -> str:
    """Reads `text` character by character and cuts at the first stop string completed."""
    for end in range(1, len(text) + 1):
        done = [s for s in stop if s and text[:end].endswith(s)]
        if done:
            return text[: end - max(len(s) for s in done)]
    return text


def run(chunks: list[str], stop: list[str]) -> tuple[list[str], StopMatcher]:
    matcher = StopMatcher(stop)
    out = [matcher.feed(chunk) for chunk in chunks]
    out.append(matcher.feed("", final=True))
    return out, matcher


def splits(text: str) -> list[list[str]]:
    """Whole, character by character, and every cut into two."""
    cuts = [[text], list(text)]
    cuts += [[text[:i], text[i:]] for i in range(1, len(text))]
    return cuts


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("hello world", [], "hello world"),
        ("hello world", ["xyz"], "hello world"),
        ("hello world", ["world"], "hello "),
        ("hello world", ["hello"], ""),  # at the very start
        ("hello world", ["o"], "hell"),
        ("abcd", ["abc", "bcd"], ""),  # overlapping: "abc" completes first
        ("abcd", ["abcd", "bc"], "a"),  # "bc" completes before "abcd" does
        ("xabc", ["bc", "abc"], "x"),  # both complete at once: the longer one
        ("aaab", ["aab"], "a"),  # the held prefix must slide
        ("one two three four", ["four", "three", "two", "one two t"], "one "),
        ("the end is near", ["end is far"], "the end is near"),  # a prefix that never completes
        ("partial <|st", ["<|stop|>"], "partial <|st"),
        ("a stop", ["", "stop"], "a "),  # empty stop strings are ignored
    ],
)
def test_every_split_gives_the_reference(text: str, stop: list[str], expected: str) -> None:
    assert reference(text, stop) == expected
    for chunks in splits(text):
        out, matcher = run(chunks, stop)
        assert "".join(out) == expected, chunks
        assert matcher.stopped == any(s and s in text for s in stop)


def test_never_lets_out_part_of_a_stop_string() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("abc S") == "abc "
    assert matcher.feed("T") == ""
    assert matcher.feed("O") == ""
    assert matcher.feed("x") == "STOx"  # the prefix broke off: it is plain text after all
    assert matcher.feed("ST") == ""
    assert matcher.feed("OP and more") == ""
    assert matcher.stopped
    assert matcher.feed("ignored") == ""
    assert matcher.feed("", final=True) == ""


def test_final_lets_out_a_prefix_that_never_completed() -> None:
    matcher = StopMatcher(["\n\nUser:"])
    assert matcher.feed("answer\n\nUs") == "answer"
    assert matcher.feed("", final=True) == "\n\nUs"
    assert not matcher.stopped


def test_stop_completed_by_the_final_chunk() -> None:
    matcher = StopMatcher(["end"])
    assert matcher.feed("the e") == "the "
    assert matcher.feed("nd", final=True) == ""
    assert matcher.stopped


@pytest.mark.parametrize("seed", range(300))
def test_random_texts_and_splits(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice("ab c\n😀你") for _ in range(rng.randrange(0, 30)))
    stop = []
    for _ in range(rng.randrange(0, 5)):
        if text and rng.random() < 0.7:
            start = rng.randrange(len(text))
            stop.append(text[start : start + rng.randrange(1, 6)])
        else:
            stop.append("".join(rng.choice("abc") for _ in range(rng.randrange(1, 4))))
    chunks, i = [], 0
    while i < len(text):
        step = rng.randrange(0, 5)
        chunks.append(text[i : i + step])
        i += step
    out, _ = run(chunks, stop)
    expected = reference(text, stop)
    assert "".join(out) == expected
    so_far = ""
    for piece in out:
        so_far += piece
        assert expected.startswith(so_far)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [(["world"], "hello world"), (["o w", "l"], "hel"), (["xyz"], "hello world, again")],
)
def test_include_lets_out_the_stop_string_that_matched(stop: list[str], expected: str) -> None:
    for chunks in splits("hello world, again"):
        matcher = StopMatcher(stop, include=True)
        out = [matcher.feed(chunk) for chunk in chunks]
        out.append(matcher.feed("", final=True))
        assert "".join(out) == expected, chunks
