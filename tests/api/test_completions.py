"""POST /v1/completions on the fake engine: prompt forms, echo, logprobs, n, streams, errors."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.api.sse import events
from tests.api.test_errors import check
from tests.fakes import EOS, MODEL_NAMES, REPLY, FakeEngine, fake_logprobs, make_app, make_client
from tests.schema import validate

COMPLETIONS = "/v1/completions"


def validate_completion(completion: dict[str, Any]) -> None:
    """Validate against CreateCompletionResponse, allowing the nulls OpenAI's own legacy API
    sends and its schema omits: a stream chunk's usage (with include_usage) and finish_reason
    before the last, and an echoed prompt's first token_logprobs and top_logprobs entries (vLLM
    sends them alike, and lm-evaluation-harness expects them)."""
    copy = orjson.loads(orjson.dumps(completion))
    if "usage" in copy and copy["usage"] is None:
        del copy["usage"]
    for choice in copy["choices"]:
        if choice["finish_reason"] is None:
            choice["finish_reason"] = "length"
        logprobs = choice["logprobs"]
        if logprobs and logprobs["token_logprobs"][:1] == [None]:
            assert logprobs["top_logprobs"][0] is None
            logprobs["token_logprobs"][0], logprobs["top_logprobs"][0] = 0.0, {}
    validate(copy, "CreateCompletionResponse")


def body(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL_NAMES[0], "prompt": "Say hi", **overrides}


async def complete(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(COMPLETIONS, json=body(**overrides))
    assert response.status_code == 200, response.text
    whole: dict[str, Any] = response.json()
    validate_completion(whole)
    return whole


async def test_whole_completion(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    whole = await complete(client, max_tokens=64)
    assert whole["id"].startswith("cmpl-") and whole["object"] == "text_completion"
    assert whole["model"] == MODEL_NAMES[0]
    assert whole["choices"] == [
        {"index": 0, "text": REPLY, "logprobs": None, "finish_reason": "stop"}
    ]
    assert whole["usage"]["prompt_tokens"] == len("Say hi")
    assert whole["usage"]["completion_tokens"] == len(REPLY) + 1
    [prompt] = engine.prompts.values()
    assert prompt == list(b"Say hi")  # the text as is: no template, no BOS


async def test_max_tokens_defaults_to_16(client: httpx.AsyncClient) -> None:
    whole = await complete(client)
    assert whole["choices"][0]["text"] == REPLY[:16]
    assert whole["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "prompt",
    [["Say hi", "Say bye"], [list(b"Say hi"), list(b"Say bye")]],
    ids=["texts", "token lists"],
)
async def test_each_prompt_is_a_choice_n_times(
    client: httpx.AsyncClient, engine: FakeEngine, prompt: list[Any]
) -> None:
    whole = await complete(client, prompt=prompt, n=2, max_tokens=5, seed=7)
    assert [choice["index"] for choice in whole["choices"]] == [0, 1, 2, 3]
    assert all(choice["text"] == REPLY[:5] for choice in whole["choices"])
    assert sorted(engine.prompts.values()) == sorted([list(b"Say hi")] * 2 + [list(b"Say bye")] * 2)
    assert sorted(params.seed for params in engine.params.values()) == [7, 7, 8, 8]
    usage = whole["usage"]
    assert usage["prompt_tokens"] == len("Say hi") + len("Say bye")
    assert usage["completion_tokens"] == 4 * 5


async def test_token_id_prompt(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    whole = await complete(client, prompt=[72, 105], echo=True, max_tokens=2)
    assert whole["choices"][0]["text"] == "Hi" + REPLY[:2]
    assert list(engine.prompts.values()) == [[72, 105]]


async def test_echo_and_logprobs_of_prompt_and_completion(client: httpx.AsyncClient) -> None:
    whole = await complete(client, echo=True, logprobs=2, max_tokens=3)
    [choice] = whole["choices"]
    assert choice["text"] == "Say hi" + REPLY[:3]
    logprobs = choice["logprobs"]
    tokens = list("Say hi" + REPLY[:3])
    assert logprobs["tokens"] == tokens
    assert logprobs["text_offset"] == list(range(len(tokens)))
    expected = fake_logprobs(list(b"ay hi" + REPLY[:3].encode()), 2)
    assert logprobs["token_logprobs"] == [None, *(p.chosen.logprob for p in expected)]
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["top_logprobs"][1] == {
        "a": expected[0].top[0].logprob,
        "b": expected[0].top[1].logprob,
    }


async def test_scoring_a_prompt_with_max_tokens_0(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    response = await client.post(COMPLETIONS, json=body(echo=True, logprobs=0, max_tokens=0))
    whole = response.json()
    [choice] = whole["choices"]
    assert choice["text"] == "Say hi" and choice["finish_reason"] == "length"
    assert choice["logprobs"]["tokens"] == list("Say hi")
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert all(top == {} for top in choice["logprobs"]["top_logprobs"][1:])
    assert whole["usage"]["completion_tokens"] == 0
    [params] = engine.params.values()
    assert (params.max_tokens, params.prompt_logprobs, params.logprobs) == (0, 0, 0)


async def test_logprobs_without_echo_do_not_score_the_prompt(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    whole = await complete(client, logprobs=1, max_tokens=4)
    assert whole["choices"][0]["logprobs"]["tokens"] == list(REPLY[:4])
    assert whole["choices"][0]["logprobs"]["text_offset"] == [0, 1, 2, 3]
    [params] = engine.params.values()
    assert params.prompt_logprobs is None


async def test_a_character_split_over_tokens_gets_escaped_tokens_and_one_offset() -> None:
    engine = FakeEngine([*"é!".encode(), EOS])
    async with make_client(make_app(engine)) as client:
        whole = await complete(client, logprobs=0, max_tokens=8)
    logprobs = whole["choices"][0]["logprobs"]
    assert whole["choices"][0]["text"] == "é!"
    assert logprobs["tokens"] == ["\\xc3", "\\xa9", "!", "<eos>"]
    assert logprobs["text_offset"] == [0, 1, 1, 2]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream(client: httpx.AsyncClient, include_usage: bool) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = await client.post(COMPLETIONS, json=body(stream=True, max_tokens=64, **options))
    chunks = events(response)
    for chunk in chunks:
        validate_completion(chunk)
    text_chunks = chunks[:-1] if include_usage else chunks
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == REPLY
    assert [c["choices"][0]["finish_reason"] for c in text_chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in text_chunks[:-1])
    if include_usage:
        assert all(c["usage"] is None for c in text_chunks)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 27
    else:
        assert all("usage" not in c for c in chunks)


async def test_stream_with_n_echo_and_continuous_usage(client: httpx.AsyncClient) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    request = body(stream=True, n=2, echo=True, max_tokens=3, stream_options=options)
    chunks = events(await client.post(COMPLETIONS, json=request))
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        texts[choice["index"]] += choice["text"]
        assert chunk["usage"]["prompt_tokens"] == len("Say hi")
    assert texts == {0: "Say hi" + REPLY[:3], 1: "Say hi" + REPLY[:3]}
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_stop_strings_and_include_stop_str_in_output(client: httpx.AsyncClient) -> None:
    cut = await complete(client, stop=["world"], max_tokens=64)
    assert cut["choices"][0]["text"] == "Hello, "
    kept = await complete(client, stop=["world"], include_stop_str_in_output=True, max_tokens=64)
    assert kept["choices"][0]["text"] == "Hello, world"
    assert kept["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("overrides", "code", "param"),
    [
        ({"prompt": ""}, None, "prompt"),
        ({"prompt": []}, None, "prompt"),
        ({"prompt": ["a", ""]}, None, "prompt.1"),
        ({"prompt": [[1, 2], []]}, None, "prompt.1"),
        ({"prompt": [1, 512]}, None, "prompt"),
        ({"prompt": [[1], [-1]]}, None, "prompt.1"),
        ({"prompt": 5}, "invalid_type", "prompt"),
        ({"prompt": {"text": "a"}}, "invalid_type", "prompt"),
        ({"logprobs": 6}, "integer_above_max_value", "logprobs"),
        ({"logprobs": True}, "invalid_type", "logprobs"),
        ({"max_tokens": -1}, "integer_below_min_value", "max_tokens"),
        ({"suffix": "end"}, None, "suffix"),
        ({"best_of": 3}, None, "best_of"),
        ({"n": 0}, "integer_below_min_value", "n"),
        ({"n": 128, "prompt": ["a"] * 9}, None, "n"),
        ({"max_tokens": 300}, "context_length_exceeded", "prompt"),
        ({"prompt": "x" * 300}, "context_length_exceeded", "prompt"),
        ({"logit_bias": {"999": 1}}, None, "logit_bias"),
        ({"min_tokens": 17}, None, "min_tokens"),
        ({"stream_options": {"include_usage": True}}, None, "stream_options"),
        ({"model": "nope"}, "model_not_found", "model"),
    ],
)
async def test_bad_requests_name_the_param(
    client: httpx.AsyncClient, overrides: dict[str, Any], code: str | None, param: str
) -> None:
    response = await client.post(COMPLETIONS, json=body(**overrides))
    check(response, 404 if code == "model_not_found" else 400, code, param)


async def test_best_of_equal_to_n_is_accepted(client: httpx.AsyncClient) -> None:
    whole = await complete(client, n=2, best_of=2, max_tokens=2)
    assert len(whole["choices"]) == 2


async def test_a_stop_token_is_listed_last_in_logprobs_but_not_in_the_text(
    client: httpx.AsyncClient,
) -> None:
    whole = await complete(client, logprobs=1, max_tokens=64)
    [choice] = whole["choices"]
    assert choice["text"] == REPLY and choice["finish_reason"] == "stop"
    assert choice["logprobs"]["tokens"] == [*REPLY, "<eos>"]
    assert choice["logprobs"]["text_offset"][-1] == len(REPLY)
    assert whole["usage"]["completion_tokens"] == len(REPLY) + 1
