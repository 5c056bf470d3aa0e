"""Chat completions' n, logprobs, usage options and sampling defaults, on the fake engine."""

from __future__ import annotations

from typing import Any

import httpx

from headrace.api import create_app
from headrace.serving import SamplingDefaults
from tests.api.sse import events
from tests.fakes import REPLY, FakeEngine, FakeServed, chat_body, fake_logprobs, make_client
from tests.schema import validate

CHAT = "/v1/chat/completions"


async def whole(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(CHAT, json=chat_body(**overrides))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    validate(body, "CreateChatCompletionResponse")
    return body


async def streamed(client: httpx.AsyncClient, **overrides: Any) -> list[dict[str, Any]]:
    chunks = events(await client.post(CHAT, json=chat_body(stream=True, **overrides)))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


async def test_n_choices_whole(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = await whole(client, n=3, seed=5, max_tokens=4)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == REPLY[:4] for c in body["choices"])
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["prompt_tokens"] == len(next(iter(engine.prompts.values())))
    assert sorted(p.seed for p in engine.params.values()) == [5, 6, 7]
    ids = [f"{body['id']}-{i}" for i in range(3)]
    # Samples 1 and 2 wait in the engine for sample 0 to compute the prompt they share.
    assert engine.after == {ids[0]: None, ids[1]: ids[0], ids[2]: ids[0]}


async def test_n_choices_stream_interleaved_by_index(client: httpx.AsyncClient) -> None:
    chunks = await streamed(client, n=2, max_tokens=3, stream_options={"include_usage": True})
    choices = [chunk["choices"][0] for chunk in chunks[:-1]]
    for index in (0, 1):
        mine = [choice for choice in choices if choice["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert all("role" not in choice["delta"] for choice in mine[1:])
        assert "".join(c["delta"].get("content", "") for c in mine) == REPLY[:3]
        finishes = [choice["finish_reason"] for choice in mine]
        assert finishes[-1] == "length" and not any(finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


async def test_logprobs_whole(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    body = await whole(client, logprobs=True, top_logprobs=2, max_tokens=3)
    content = body["choices"][0]["logprobs"]["content"]
    expected = fake_logprobs(REPLY[:3].encode(), 2)
    assert [entry["token"] for entry in content] == list(REPLY[:3])
    assert [entry["bytes"] for entry in content] == [[b] for b in REPLY[:3].encode()]
    assert [entry["logprob"] for entry in content] == [p.chosen.logprob for p in expected]
    assert [len(entry["top_logprobs"]) for entry in content] == [2, 2, 2]
    assert body["choices"][0]["logprobs"]["refusal"] is None
    [params] = engine.params.values()
    assert params.logprobs == 2


async def test_logprobs_without_top_logprobs_list_no_alternatives(
    client: httpx.AsyncClient,
) -> None:
    body = await whole(client, logprobs=True, max_tokens=2)
    assert all(entry["top_logprobs"] == [] for entry in body["choices"][0]["logprobs"]["content"])


async def test_logprobs_streamed_with_the_tokens_of_each_chunk(client: httpx.AsyncClient) -> None:
    chunks = await streamed(client, logprobs=True, top_logprobs=1)
    tokens = [
        entry["token"]
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["logprobs"] is not None
        for entry in choice["logprobs"]["content"]
    ]
    assert "".join(tokens) == REPLY
    for chunk in chunks:
        [choice] = chunk["choices"]
        if choice["logprobs"] is not None:  # the entries of the chunk's own text
            text = "".join(entry["token"] for entry in choice["logprobs"]["content"])
            assert choice["delta"]["content"] == text


async def test_continuous_usage_on_every_chunk(client: httpx.AsyncClient) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = await streamed(client, max_tokens=4, stream_options=options)
    counts = [chunk["usage"]["completion_tokens"] for chunk in chunks[1:]]
    assert chunks[0]["usage"] is None  # the role chunk comes before any token
    assert counts == sorted(counts) and counts[-1] == 4


async def test_include_stop_str_in_output(client: httpx.AsyncClient) -> None:
    body = await whole(client, stop=["world"], include_stop_str_in_output=True)
    assert body["choices"][0]["message"]["content"] == "Hello, world"


async def test_min_tokens_reaches_the_engine(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await whole(client, min_tokens=3, max_tokens=5)
    [params] = engine.params.values()
    assert params.min_tokens == 3


async def test_the_models_defaults_fill_what_the_request_leaves_out() -> None:
    engine = FakeEngine()
    defaults = SamplingDefaults(temperature=0.2, top_p=0.9, top_k=20, max_tokens=7)
    app = create_app(FakeServed(engine=engine, sampling_defaults=defaults))
    async with make_client(app) as client:
        await whole(client)
        await whole(client, temperature=1.5, top_p=1, top_k=-1, max_tokens=3)
    left_out, given = engine.params.values()
    assert (left_out.temperature, left_out.top_p, left_out.top_k) == (0.2, 0.9, 20)
    assert left_out.max_tokens == 7
    assert (given.temperature, given.top_p, given.top_k, given.max_tokens) == (1.5, 1, 0, 3)
