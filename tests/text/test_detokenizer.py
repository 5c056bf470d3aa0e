from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from headrace.text import IncrementalDetokenizer, Tokenizer
from tests.text.factories import IM_END_ID
from tests.text.test_stop_matcher import reference

EOS = 10_000  # a special token: decodes to nothing


class ByteVocab:
    """A fake byte-level vocabulary: each token is a byte string, made up as text is split."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.ids: dict[bytes, int] = {}
        # Lengths of every window the detokenizer decoded.
        self.windows: list[int] = []

    def token(self, piece: bytes) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def split(self, text: str, rng: random.Random, longest: int = 4) -> list[int]:
        """Tokens of `text`, cut at random byte offsets (characters split and straddled)."""
        data, ids, i = text.encode(), [], 0
        while i < len(data):
            step = rng.randrange(1, longest + 1)
            ids.append(self.token(data[i : i + step]))
            i += step
        return ids

    def per_char(self, text: str) -> list[int]:
        """Tokens of `text`, every multi-byte character cut into its first byte and the rest."""
        ids = []
        for char in text:
            data = char.encode()
            ids += [self.token(data[:1])] + ([self.token(data[1:])] if len(data) > 1 else [])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        self.windows.append(len(ids))
        return b"".join(self.pieces[i] for i in ids if i != EOS).decode("utf-8", "replace")


def stream(det: IncrementalDetokenizer, ids: list[int], groups: list[int]) -> list[str]:
    out, i = [], 0
    for size in groups:
        out.append(det.push(ids[i : i + size]))
        i += size
    out.append(det.push(ids[i:]))
    out.append(det.flush())
    return out


def check(out: list[str], expected: str, complete: bool = True) -> None:
    """The pieces add up to `expected`; each step's text is final; no broken UTF-8 mid-stream."""
    assert "".join(out) == expected
    so_far = ""
    for piece in out:
        so_far += piece
        assert expected.startswith(so_far)
    if complete:
        assert "\ufffd" not in "".join(out)


def test_emoji_bytes_one_token_each() -> None:
    vocab = ByteVocab()
    ids = [vocab.token(bytes([b])) for b in "a😀b".encode()]
    det = IncrementalDetokenizer(vocab.decode)
    assert [det.push([i]) for i in ids] == ["a", "", "", "", "😀", "b"]
    assert det.flush() == ""


def test_text_before_an_unfinished_character_goes_out() -> None:
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode)
    assert det.push([vocab.token("hé".encode() + "你".encode()[:1])]) == "hé"
    assert det.push([vocab.token("你".encode()[1:2])]) == ""
    assert det.push([vocab.token("你".encode()[2:] + b"!")]) == "你!"


def test_flush_drops_an_unfinished_character() -> None:
    # As when max_tokens cuts a generation inside a character: no U+FFFD at the end.
    vocab = ByteVocab()
    ids = [vocab.token(b"ok "), vocab.token("😀".encode()[:2])]
    det = IncrementalDetokenizer(vocab.decode)
    assert det.push(ids) == "ok "
    assert vocab.decode(ids) == "ok \ufffd" and det.flush() == ""


def test_invalid_bytes_come_out_once_followed_by_text() -> None:
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode)
    assert det.push([vocab.token(b"a\x80")]) == "a"
    assert det.push([vocab.token(b"b")]) == "\ufffdb"


def test_special_tokens_are_skipped() -> None:
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode, stop=["x"])
    assert det.push([vocab.token(b"hi"), EOS]) == "hi"
    assert det.push([EOS]) == ""
    assert det.flush() == ""


def test_stop_string_spanning_tokens_and_characters() -> None:
    vocab = ByteVocab()
    text = "Answer: 42 😀😀 END of it"
    ids = vocab.per_char(text)
    det = IncrementalDetokenizer(vocab.decode, stop=["😀 END"])
    out = [det.push([i]) for i in ids]
    assert "".join(out) == "Answer: 42 😀"
    assert det.stopped
    assert det.push([vocab.token(b"more")]) == ""
    assert det.flush() == ""


def test_stop_string_at_the_very_start() -> None:
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode, stop=["Hel"])
    assert det.push([vocab.token(b"He")]) == ""
    assert det.push([vocab.token(b"llo")]) == ""
    assert det.stopped
    assert det.flush() == ""


def test_unfinished_stop_prefix_is_flushed() -> None:
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode, stop=["</answer>", "\n\n"])
    assert det.push([vocab.token(b"yes</ans")]) == "yes"
    assert det.push([vocab.token(b"\n")]) == "</ans"
    assert det.flush() == "\n"
    assert not det.stopped


def test_cost_per_token_stays_constant() -> None:
    vocab = ByteVocab()
    text = "word 😀 你好 é " * 500
    ids = vocab.per_char(text)
    det = IncrementalDetokenizer(vocab.decode, stop=["never seen", "x"])
    out = [det.push([i]) for i in ids]
    out.append(det.flush())
    check(out, text)
    assert max(vocab.windows) <= 4


def test_a_replacement_character_comes_out_unless_it_ends_the_text() -> None:
    # At the very end it reads as an unfinished character, and is dropped as one.
    vocab = ByteVocab()
    det = IncrementalDetokenizer(vocab.decode)
    assert det.push([vocab.token("a\ufffd".encode())]) == "a"
    assert det.push([vocab.token(b"b")]) == "\ufffdb"
    assert det.push([vocab.token("\ufffd".encode())]) == ""
    assert det.flush() == ""


ALPHABET = ["a", "b", " ", "\n", "é", "ß", "😀", "👍🏽", "你", "好", "。", "<", "/", ">", "STOP"]


def random_case(rng: random.Random) -> tuple[str, list[str]]:
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 25)))
    stop = []
    for _ in range(rng.randrange(0, 5)):
        if text and rng.random() < 0.7:
            start = rng.randrange(len(text))
            stop.append(text[start : start + rng.randrange(1, 6)])
        else:
            stop.append("".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 3))))
    return text, stop


def random_groups(rng: random.Random, count: int) -> list[int]:
    groups: list[int] = []
    while sum(groups) < count:
        groups.append(rng.choice([0, 1, 1, 1, 2, 3, 5]))
    return groups


@pytest.mark.parametrize("seed", range(400))
def test_random_byte_splits_equal_decode_cut_at_the_first_stop(seed: int) -> None:
    rng = random.Random(seed)
    vocab = ByteVocab()
    text, stop = random_case(rng)
    ids = vocab.split(text, rng)
    if rng.random() < 0.3:  # special tokens sprinkled in
        ids.insert(rng.randrange(len(ids) + 1), EOS)
    if rng.random() < 0.3:  # generation cut off inside a character
        ids.append(vocab.token("😀".encode()[: rng.randrange(1, 4)]))
    det = IncrementalDetokenizer(vocab.decode, stop)
    out = stream(det, ids, random_groups(rng, len(ids)))
    expected = reference(vocab.decode(ids), stop)
    if not det.stopped:  # a character left unfinished at the end is dropped
        expected = expected.rstrip("\ufffd")
    check(out[:-1], expected[: len("".join(out[:-1]))])  # nothing broken before the flush
    check(out, expected, complete=False)
    assert det.stopped == any(s and s in vocab.decode(ids) for s in stop)


@pytest.mark.parametrize("seed", range(150))
def test_random_texts_through_the_tiny_tokenizer(tiny_tokenizer: Tokenizer, seed: int) -> None:
    rng = random.Random(seed)
    text, stop = random_case(rng)
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.decode(ids) == text
    det = tiny_tokenizer.detokenizer(stop)
    out = stream(
        det, [*ids, IM_END_ID], random_groups(rng, len(ids))
    )  # ends with EOS, as the engine does
    check(out, reference(text, stop))


def test_tiny_tokenizer_long_generation_decodes_small_windows(tiny_tokenizer: Tokenizer) -> None:
    windows: list[int] = []

    def decode(ids: Sequence[int]) -> str:
        windows.append(len(ids))
        return tiny_tokenizer.decode(ids)

    text = "Hello world! 😀 你好\uff0c世界。 Grüße 👍🏽\n" * 200
    ids = tiny_tokenizer.encode(text)
    det = IncrementalDetokenizer(decode, stop=["never"])
    out = [det.push([token]) for token in ids]
    out.append(det.flush())
    check(out, text)
    assert max(windows) <= 8
