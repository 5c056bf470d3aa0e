"""Text completions, log-probabilities, n and the other sampling options on the real model,
through the real SDK.

The model's logits round differently on every CPU, so no test compares the model's greedy text
with a fixed string: each compares the server with itself (a stream with the whole answer, a
scored prompt with the log-probabilities the tokens were generated with), or forces tokens with
biases of +-100.
"""

from __future__ import annotations

import time

import openai
import pytest

from headrace.model.source import resolve_model
from headrace.text import Tokenizer
from tests.e2e.conftest import MODEL_NAMES, Server, node_check

pytestmark = pytest.mark.e2e
PROMPT = "The three primary colours are"
MODEL = MODEL_NAMES[0]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(server: Server) -> Tokenizer:
    return Tokenizer.from_path(resolve_model(None).path)  # the server has fetched it


def test_whole_and_streamed_completions_agree(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    [choice] = whole.choices
    assert whole.object == "text_completion" and choice.text and choice.finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 12
    stream = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_a_scored_prompt_matches_the_logprobs_its_tokens_were_generated_with(
    client: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    generated = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1
    )
    [choice] = generated.choices
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    assert choice.logprobs.tokens is not None and choice.logprobs.top_logprobs is not None
    prompt_ids = tokenizer.encode(PROMPT)
    output_ids = tokenizer.encode(PROMPT + choice.text)[len(prompt_ids) :]
    # Scoring the prompt and the generated tokens together, in one forward pass (lm-eval's
    # loglikelihood request): echo, logprobs, and nothing generated.
    scored = client.completions.create(
        model=MODEL, prompt=prompt_ids + output_ids, echo=True, logprobs=1, max_tokens=0
    )
    [echo] = scored.choices
    assert echo.finish_reason == "length" and echo.text == PROMPT + choice.text
    assert scored.usage is not None and scored.usage.completion_tokens == 0
    assert echo.logprobs is not None and echo.logprobs.token_logprobs is not None
    assert echo.logprobs.top_logprobs is not None and echo.logprobs.tokens is not None
    assert echo.logprobs.token_logprobs[0] is None
    assert len(echo.logprobs.tokens) == len(prompt_ids) + len(output_ids)
    tail = echo.logprobs.token_logprobs[len(prompt_ids) :]
    # The same positions, from decode steps and from one prefill. On the quantized default
    # model the decode kernel rounds the activations to 8 bits, as llama.cpp's does, and the
    # prefill kernel does not: they differ by up to about 0.2 (unquantized float32, they are
    # equal; tests/engine/test_logprobs.py holds both to transformers).
    assert tail == pytest.approx(choice.logprobs.token_logprobs, abs=0.3)
    assert echo.logprobs.tokens[len(prompt_ids) :] == choice.logprobs.tokens
    for token, top in zip(choice.logprobs.tokens, choice.logprobs.top_logprobs, strict=True):
        assert max(top, key=top.__getitem__) == token  # greedy: each the likeliest there
    assert all(value <= 0 for value in echo.logprobs.token_logprobs[1:] if value is not None)


def test_chat_logprobs_cover_the_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=10,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    [choice] = reply.choices
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert (
        b"".join(bytes(entry.bytes or []) for entry in content).decode() == choice.message.content
    )
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)


def test_n_choices_and_the_same_seed_gives_the_same_choices(client: openai.OpenAI) -> None:
    def sample() -> list[str]:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write one word."}],
            max_tokens=8,
            temperature=1.0,
            n=3,
            seed=1234,
        )
        assert [choice.index for choice in reply.choices] == [0, 1, 2]
        assert reply.usage is not None and reply.usage.completion_tokens <= 24
        return [choice.message.content or "" for choice in reply.choices]

    # The first run computes the prompt, later ones find it cached; runs alike compute alike
    # (the kernels round differently for other batch shapes, as vLLM's do).
    sample()
    first = sample()
    assert sample() == first
    assert len(set(first)) > 1  # each choice samples with its own seed


def test_n_streamed_choices_each_finish(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL, prompt=[PROMPT, "Once upon a time"], n=2, max_tokens=5, stream=True
    )
    finishes: dict[int, list[str | None]] = {}
    for chunk in stream:
        for choice in chunk.choices:
            finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert sorted(finishes) == [0, 1, 2, 3]
    assert all(reasons[-1] is not None and not any(reasons[:-1]) for reasons in finishes.values())


def test_min_tokens_holds_off_a_forced_end(client: openai.OpenAI, tokenizer: Tokenizer) -> None:
    (im_end,) = tokenizer.encode("<|im_end|>")
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=20,
        temperature=0,
        logit_bias={str(im_end): 100},
        extra_body={"min_tokens": 5},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 6  # 5, then the end


def test_include_stop_str_in_output(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0)
    word = plain.choices[0].text.split()[1]
    cut = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stop=[word]
    )
    kept = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        stop=[word],
        extra_body={"include_stop_str_in_output": True},
    )
    assert kept.choices[0].text == cut.choices[0].text + word
    assert cut.choices[0].finish_reason == kept.choices[0].finish_reason == "stop"


def test_continuous_usage_stats(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
    )
    counts = [chunk.usage.completion_tokens for chunk in stream if chunk.usage is not None]
    assert len(counts) > 2 and counts == sorted(counts)


def test_the_default_models_sampling_defaults_are_in_force(server: Server) -> None:
    assert "sampling defaults: temperature 0.2, top_p 0.9" in server.log.read_text()


def test_the_node_sdk_reads_completions_scores_logprobs_and_the_request_id(
    server: Server,
) -> None:
    result = node_check(server, "completions.mjs")
    assert result["whole"] and result["streamed"] == result["whole"]
    assert result["streamed_tokens"] == 8
    scored = result["scored"]
    assert result["scored_text"] == PROMPT
    assert "".join(scored["tokens"]) == PROMPT
    assert scored["token_logprobs"][0] is None and scored["top_logprobs"][0] is None
    assert all(len(top) == 2 for top in scored["top_logprobs"][1:])
    assert scored["text_offset"][0] == 0 and scored["text_offset"] == sorted(scored["text_offset"])
    for choice in result["chat_choices"]:
        assert "".join(choice["tokens"]) == choice["content"]
    assert [choice["index"] for choice in result["chat_choices"]] == [0, 1]
    request_id = result["chat_request_id"]  # x-request-id, as the SDK exposes it
    assert request_id.startswith("req_")
    deadline = time.monotonic() + 10  # the line is written once the response has gone
    while f"request_id={request_id} " not in server.log.read_text():
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.1)
