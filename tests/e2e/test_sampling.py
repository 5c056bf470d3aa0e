"""Logit bias and repetition penalties act on the real model, through the real SDK."""

from __future__ import annotations

from collections import Counter

import openai
import pytest

from headrace.model.source import resolve_model
from headrace.text import Tokenizer
from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e
# Greedy, the default model answers this in a loop: "The sea is a vast and mysterious realm that
# exists beyond the boundaries of our planet. It is a vast and mysterious realm that ..."
ASK = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def tokenizer(server: Server) -> Tokenizer:
    return Tokenizer.from_path(resolve_model(None).path)  # the server has fetched it


def greedy(server: Server, **extra: object) -> tuple[str, str]:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL_NAMES[0], messages=ASK, max_tokens=30, temperature=0, **extra
    )
    choice = reply.choices[0]
    return choice.message.content or "", choice.finish_reason


def repeats(tokenizer: Tokenizer, text: str) -> int:
    """How many runs of 3 tokens the text has already had earlier."""
    tokens = tokenizer.encode(text)
    runs = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
    return sum(count - 1 for count in runs.values())


def test_a_logit_bias_of_100_makes_greedy_pick_that_token(
    server: Server, tokenizer: Tokenizer
) -> None:
    (banana, *_) = tokenizer.encode(" banana")
    text, finish = greedy(server, logit_bias={str(banana): 100})
    assert text == tokenizer.decode([banana] * 30) and finish == "length"


def test_a_logit_bias_of_minus_100_bans_a_token(server: Server, tokenizer: Tokenizer) -> None:
    plain, _ = greedy(server)
    (first, *_) = tokenizer.encode(plain)
    text, _ = greedy(server, logit_bias={str(first): -100})
    assert first not in tokenizer.encode(text)


@pytest.mark.parametrize(
    "penalty",
    [
        {"frequency_penalty": 2},
        {"presence_penalty": 2},
        {"extra_body": {"repetition_penalty": 1.5}},  # vLLM's, outside the SDK's signature
    ],
    ids=["frequency", "presence", "repetition"],
)
def test_penalties_break_the_loop_of_a_repetitive_answer(
    server: Server, tokenizer: Tokenizer, penalty: dict[str, object]
) -> None:
    plain, _ = greedy(server)
    assert repeats(tokenizer, plain) >= 8  # the model does loop here
    penalized, _ = greedy(server, **penalty)
    assert repeats(tokenizer, penalized) <= 2, penalized


def test_bad_logit_bias_ids_are_a_400_naming_the_param(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(server, logit_bias={"49152": 1})  # one past the vocabulary
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "logit_bias"  # type: ignore[index]
    assert "0 to 49151" in caught.value.body["message"]  # type: ignore[index]
