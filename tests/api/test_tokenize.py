"""vLLM's /tokenize and /detokenize: the tokens the completion routes would make, and back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes import EOS, MODEL_NAMES, FakeEngine, chat_body, make_app, make_client

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f"}}


def error_of(response: httpx.Response, param: str | None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    return error


async def test_a_prompt_is_the_tokens_a_completion_gets(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    tokenized = (await client.post("/tokenize", json={"prompt": "Hello!"})).json()
    assert tokenized == {
        "count": 6,
        "max_model_len": engine.max_model_len,
        "tokens": tokenized["tokens"],
        "token_strs": None,
    }
    body = {"model": MODEL_NAMES[0], "prompt": "Hello!", "max_tokens": 1}
    assert (await client.post("/v1/completions", json=body)).status_code == 200
    assert list(engine.prompts.values())[-1] == tokenized["tokens"]


async def test_messages_are_the_tokens_a_chat_gets(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {"model": MODEL_NAMES[1], "messages": MESSAGES}
    tokenized = (await client.post("/tokenize", json=body)).json()
    assert (
        await client.post("/v1/chat/completions", json=chat_body(messages=MESSAGES))
    ).status_code == 200
    assert list(engine.prompts.values())[-1] == tokenized["tokens"]
    bare = (await client.post("/tokenize", json={**body, "add_generation_prompt": False})).json()
    assert tokenized["tokens"][: bare["count"]] == bare["tokens"]
    assert bare["count"] < tokenized["count"]


async def test_tools_are_the_tokens_a_chat_with_them_gets(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    tools = [{"type": "function", "function": {"name": "get_time"}}]
    body = {"messages": MESSAGES, "tools": tools}
    tokenized = (await client.post("/tokenize", json=body)).json()
    chat = chat_body(messages=MESSAGES, tools=tools)
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert list(engine.prompts.values())[-1] == tokenized["tokens"]
    without = (await client.post("/tokenize", json={"messages": MESSAGES})).json()
    assert without["count"] < tokenized["count"]
    assert (await client.post("/tokenize", json={**body, "tools": []})).json() == without


async def test_continue_final_message_is_the_tokens_a_chat_continuing_it_gets(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    begun = [*MESSAGES, {"role": "assistant", "content": "Hello the"}]
    body = {"messages": begun, "continue_final_message": True}
    tokenized = (await client.post("/tokenize", json=body)).json()
    assert bytes(tokenized["tokens"]).endswith(b"<assistant>Hello the")
    chat = chat_body(messages=begun, continue_final_message=True, add_generation_prompt=False)
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert list(engine.prompts.values())[-1] == tokenized["tokens"]


async def test_chat_template_kwargs_are_the_tokens_a_chat_with_them_gets(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": True}}
    tokenized = (await client.post("/tokenize", json=body)).json()
    chat = chat_body(messages=MESSAGES, chat_template_kwargs={"enable_thinking": True})
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert list(engine.prompts.values())[-1] == tokenized["tokens"]
    assert bytes(tokenized["tokens"]).startswith(b"<variables>")


async def test_return_token_strs_gives_each_tokens_string(client: httpx.AsyncClient) -> None:
    for body in ({"prompt": "Hi!"}, {"messages": MESSAGES}):
        answer = (await client.post("/tokenize", json={**body, "return_token_strs": True})).json()
        assert len(answer["token_strs"]) == answer["count"] > 0
        assert "".join(answer["token_strs"]).endswith("Hi!" if "prompt" in body else "<assistant>")
    plain = await client.post("/tokenize", json={"prompt": "Hi!", "return_token_strs": False})
    assert plain.json()["token_strs"] is None


async def test_detokenize_gives_the_text_back(client: httpx.AsyncClient) -> None:
    tokens = (await client.post("/tokenize", json={"prompt": "héllo"})).json()["tokens"]
    answer = await client.post("/detokenize", json={"model": MODEL_NAMES[0], "tokens": tokens})
    assert answer.json() == {"prompt": "héllo"}
    assert (await client.post("/detokenize", json={"tokens": []})).json() == {"prompt": ""}
    # Special tokens are kept, as vLLM's /detokenize keeps them.
    eos = (await client.post("/detokenize", json={"tokens": [*tokens, EOS]})).json()
    assert eos == {"prompt": "héllo<eos>"}


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/tokenize", {}, "messages"),
        ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "messages"),
        ("/tokenize", {"prompt": "a", "add_generation_prompt": False}, "add_generation_prompt"),
        ("/tokenize", {"messages": MESSAGES, "add_special_tokens": True}, "add_special_tokens"),
        ("/tokenize", {"prompt": "a", "return_token_strs": 1}, "return_token_strs"),
        ("/tokenize", {"prompt": "a", "tools": []}, "tools"),
        ("/tokenize", {"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools.0.function"),
        ("/tokenize", {"messages": MESSAGES, "tools": [TOOL, TOOL]}, "tools"),
        ("/tokenize", {"messages": MESSAGES, "tools": "x"}, "tools"),
        ("/tokenize", {"prompt": "a", "continue_final_message": True}, "continue_final_message"),
        ("/tokenize", {"prompt": "a", "chat_template_kwargs": {}}, "chat_template_kwargs"),
        (
            "/tokenize",
            {"messages": MESSAGES, "chat_template_kwargs": {"tokenize": True}},
            "chat_template_kwargs.tokenize",
        ),
        (
            "/tokenize",
            {"messages": MESSAGES, "continue_final_message": True, "add_generation_prompt": True},
            "continue_final_message",
        ),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/tokenize", {"messages": []}, "messages"),
        ("/tokenize", {"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ("/detokenize", {"tokens": [-1]}, "tokens.0"),
        ("/detokenize", {"tokens": [1, 10**9]}, "tokens.1"),
        ("/detokenize", {"tokens": "abc"}, "tokens"),
        ("/detokenize", {}, "tokens"),
    ],
)
async def test_bad_requests_are_400(
    client: httpx.AsyncClient, route: str, body: dict[str, Any], param: str
) -> None:
    error_of(await client.post(route, json=body), param)


@pytest.mark.parametrize("route", ["/tokenize", "/detokenize"])
async def test_a_model_not_served_is_404(client: httpx.AsyncClient, route: str) -> None:
    body = {"model": "nope", "prompt": "a", "tokens": [1]}
    body = {k: v for k, v in body.items() if k != ("tokens" if route == "/tokenize" else "prompt")}
    response = await client.post(route, json=body)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


async def test_with_keys_a_key_is_needed() -> None:
    async with make_client(make_app(api_keys=["sk-one"])) as client:
        assert (await client.post("/tokenize", json={"prompt": "a"})).status_code == 401
        allowed = await client.post(
            "/tokenize", json={"prompt": "a"}, headers={"authorization": "Bearer sk-one"}
        )
        assert allowed.status_code == 200
