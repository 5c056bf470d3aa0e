"""Logit bias and penalties act on the real model, through the real SDK; a character cut by
max_tokens leaves no U+FFFD.

The model's own logits are rounded differently on every CPU, so each test forces tokens with
biases of +-100, far beyond them, and checks what the penalties must then do. (presence_penalty,
at most 2 once, changes no such choice: its formula is tested against logits in
tests/engine/test_sampler.py.)"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from headrace.model.source import resolve_model
from headrace.text import Tokenizer
from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e
ASK = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def tokenizer(server: Server) -> Tokenizer:
    return Tokenizer.from_path(resolve_model(None).path)  # the server has fetched it


def greedy(server: Server, max_tokens: int = 30, **extra: object) -> tuple[str, str]:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL_NAMES[0], messages=ASK, max_tokens=max_tokens, temperature=0, **extra
    )
    choice = reply.choices[0]
    return choice.message.content or "", choice.finish_reason


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


def test_frequency_penalty_wears_down_a_forced_token(server: Server, tokenizer: Tokenizer) -> None:
    # +100 makes greedy pick the token 30 times out of 30 (above); 2 per occurrence takes the
    # bias back after about 50 (the model's own logits lie within a few tens of each other).
    (banana, *_) = tokenizer.encode(" banana")
    text, _ = greedy(server, logit_bias={str(banana): 100}, frequency_penalty=2, max_tokens=90)
    count = tokenizer.encode(text).count(banana)
    assert 30 <= count < 80


def test_repetition_penalty_turns_a_forced_token_away(server: Server, tokenizer: Tokenizer) -> None:
    # Two tokens biased +100: the first pick is one of them; divided by 10, it falls near the
    # model's own logits, while the other still has its +100: the second pick is the other.
    (banana, *_) = tokenizer.encode(" banana")
    (cherry, *_) = tokenizer.encode(" cherry")
    bias = {str(banana): 100, str(cherry): 100}
    text, _ = greedy(server, logit_bias=bias, extra_body={"repetition_penalty": 10.0})
    assert set(tokenizer.encode(text)[:2]) == {banana, cherry}


@pytest.mark.parametrize("only_the_likeliest", [{"top_k": 1}, {"min_p": 1.0}])
def test_top_k_1_and_min_p_1_sample_greedily_at_any_temperature(
    server: Server, only_the_likeliest: dict[str, float]
) -> None:
    # Each leaves one token to draw from: the greedy one, however hot the temperature.
    plain, _ = greedy(server)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL_NAMES[0], messages=ASK, max_tokens=30, temperature=2.0, seed=1,
        extra_body=only_the_likeliest,
    )  # fmt: skip
    assert reply.choices[0].message.content == plain


def test_a_stop_token_id_ends_the_answer_without_it(server: Server, tokenizer: Tokenizer) -> None:
    (banana, *_) = tokenizer.encode(" banana")
    forced = {"logit_bias": {str(banana): 100}}
    assert greedy(server, **forced) == (tokenizer.decode([banana] * 30), "length")  # without it
    stopped = greedy(server, **forced, extra_body={"stop_token_ids": [banana]})
    assert stopped == ("", "stop")


@pytest.mark.parametrize("stream", [True, False])
def test_max_tokens_inside_a_character_drops_its_bytes(
    server: Server, tokenizer: Tokenizer, stream: bool
) -> None:
    # The emoji's first token holds only some of its bytes; forced, then cut by max_tokens.
    (partial, *_) = tokenizer.encode("😀")
    assert tokenizer.decode([partial]) == "\ufffd"
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    kwargs: dict[str, Any] = dict(
        model=MODEL_NAMES[0], messages=ASK, max_tokens=1, logit_bias={str(partial): 100}
    )
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        whole = client.chat.completions.create(**kwargs)
        text, finish = whole.choices[0].message.content or "", whole.choices[0].finish_reason
    assert text == "" and finish == "length"


def test_bad_logit_bias_ids_are_a_400_naming_the_param(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        greedy(server, logit_bias={"49152": 1})  # one past the vocabulary
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "logit_bias"  # type: ignore[index]
    assert "0 to 49151" in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_a_penalty_lowers_a_generated_tokens_logit_by_its_value(
    server: Server, tokenizer: Tokenizer, penalty: str
) -> None:
    # A forced token, twice: at the second step it has appeared once, so either penalty lowers
    # its logit by exactly its value. Log-probabilities are taken after the penalties, so the
    # gap to the runner-up shrinks by 2, give or take the model's own logits, which the two
    # runs round apart (bfloat16 logits near 20 are 0.125 apart; the second run finds its
    # prompt cached).
    (banana, *_) = tokenizer.encode(" banana")

    def second_step(**extra: object) -> dict[str, float]:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL_NAMES[0],
            messages=ASK,
            max_tokens=2,
            temperature=0,
            logit_bias={str(banana): 100},
            logprobs=True,
            top_logprobs=3,
            **extra,  # type: ignore[arg-type]
        )
        content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content is not None and len(content) == 2
        return {top.token: top.logprob for top in content[1].top_logprobs}

    plain, penalized = second_step(), second_step(**{penalty: 2})
    forced = tokenizer.decode([banana])
    (runner_up, *_) = (token for token in plain if token != forced)
    gap = plain[forced] - plain[runner_up]
    assert penalized[forced] - penalized[runner_up] == pytest.approx(gap - 2, abs=0.5)
