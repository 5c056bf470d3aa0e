"""/tokenize and /detokenize on the real server: counts that match the completions' usage."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Name three rivers of Europe."}]


def post(server: Server, path: str, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(
        f"{server.url}{path}",
        json=body,
        headers={"authorization": f"Bearer {server.api_key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_counts_are_the_completions_usage(server: Server) -> None:
    client = server.sdk()
    chat = client.chat.completions.create(
        model=MODEL_NAMES[0],
        messages=MESSAGES,
        max_tokens=1,  # type: ignore[arg-type]
    )
    tokenized = post(server, "/tokenize", {"model": MODEL_NAMES[0], "messages": MESSAGES})
    assert chat.usage is not None and chat.usage.prompt_tokens == tokenized["count"]
    completion = client.completions.create(model=MODEL_NAMES[0], prompt="The sky is", max_tokens=1)
    prompt = post(server, "/tokenize", {"prompt": "The sky is"})
    assert completion.usage is not None and completion.usage.prompt_tokens == prompt["count"]
    assert post(server, "/detokenize", {"tokens": prompt["tokens"]}) == {"prompt": "The sky is"}


def test_tools_token_strs_and_special_tokens_on_the_real_tokenizer(server: Server) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    chat = server.sdk().chat.completions.create(
        model=MODEL_NAMES[0],
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        max_tokens=1,
    )
    body = {"messages": MESSAGES, "tools": tools, "return_token_strs": True}
    tokenized = post(server, "/tokenize", body)
    assert chat.usage is not None and chat.usage.prompt_tokens == tokenized["count"]
    strings = tokenized["token_strs"]
    assert isinstance(strings, list) and strings[0] == "<|im_start|>"
    assert "get_weather" in "".join(strings)
    # The template's special tokens come back as text.
    text = post(server, "/detokenize", {"tokens": tokenized["tokens"]})["prompt"]
    assert isinstance(text, str) and text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_a_reply_begun_by_the_client_is_continued(server: Server) -> None:
    begun = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    chat = server.sdk().chat.completions.create(
        model=MODEL_NAMES[0],
        messages=begun,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    tokenized = post(server, "/tokenize", {"messages": begun, "continue_final_message": True})
    assert chat.usage is not None and chat.usage.prompt_tokens == tokenized["count"]
    text = post(server, "/detokenize", {"tokens": tokenized["tokens"]})["prompt"]
    assert isinstance(text, str) and text.endswith("assistant\nThe capital of France is")
    # Greedy, the model goes on with the sentence rather than opening a reply of its own.
    assert "Paris" in (chat.choices[0].message.content or "")
