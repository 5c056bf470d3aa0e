"""Random well-formed replies in every format, split at random and through a real tokenizer."""

from __future__ import annotations

import random

import pytest

from headrace.text import TOOL_CALL_FORMATS, Tokenizer
from tests.text.tool_replies import check, parse, random_pieces, random_reply, through


@pytest.mark.parametrize("seed", range(200))
def test_random_replies(special_tokenizer: Tokenizer, seed: int) -> None:
    rng = random.Random(seed)
    case = random_reply(rng)
    check(case, parse(case.fmt, random_pieces(case.text, rng)))
    specials = ("[TOOL_CALLS]", "[ARGS]", "<|python_tag|>")
    kept = TOOL_CALL_FORMATS[case.fmt].parser().markers
    if not any(s in case.text for s in specials if s not in kept):  # else not detokenized back
        check(case, through(special_tokenizer, case, rng, 4))
