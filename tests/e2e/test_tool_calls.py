"""Function calling and structured outputs on the real default model, through the real SDKs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pydantic
import pytest

from tests.e2e.conftest import Server, node_check
from tests.guide import WEATHER_TOOL
from tests.schema import validate

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent
WEATHER: Any = WEATHER_TOOL
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
ALICE = "Reply with a JSON object with keys name and age for Alice, 30."
ASK: Any = [{"role": "user", "content": "What's the weather in Berlin?"}]


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)


def check_weather_call(name: str, arguments: str) -> None:
    assert name == "get_weather"
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def calls_of(completion: Any) -> list[tuple[str, str]]:
    calls = completion.choices[0].message.tool_calls or []
    return [(call.function.name, call.function.arguments) for call in calls]


def test_guide_function_calling_snippet_runs(server: Server) -> None:
    done = subprocess.run(
        [sys.executable, "snippets/function_calling.py"],
        cwd=HERE, env=server.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():  # the small model may answer in prose instead
        assert line.startswith("Tool: get_weather, Args: {")


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_call_streams_and_accumulates(client: openai.OpenAI, tool_choice: Any) -> None:
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=ASK, tools=[WEATHER, TIME], tool_choice=tool_choice,
        parallel_tool_calls=False, stream=True, seed=3, max_tokens=100,
    )  # fmt: skip
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    reasons = []
    for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        choice = chunk.choices[0]
        reasons.append(choice.finish_reason)
        assert not choice.delta.content
        for call in choice.delta.tool_calls or []:
            if call.id:
                assert call.function and call.function.name and call.function.arguments == ""
                calls[call.index] = {"name": call.function.name, "arguments": ""}
            else:
                assert call.function and call.function.name is None
                fragments += 1
            calls[call.index]["arguments"] += (call.function and call.function.arguments) or ""
    assert reasons[-1] == "tool_calls"
    assert fragments > 1, "arguments are streamed as they are generated"
    (call,) = calls.values()
    if call["name"] == "get_time":
        jsonschema.validate(json.loads(call["arguments"]), TIME["function"]["parameters"])
    else:
        check_weather_call(call["name"], call["arguments"])


def test_parallel_calls_are_numbered_and_end(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="gpt-4.1", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
        seed=3, max_tokens=150,
    )  # fmt: skip
    calls = whole.choices[0].message.tool_calls or []
    # This small model, forced, would call again and again: at most one call per tool.
    assert len(calls) == 2 and whole.choices[0].finish_reason == "tool_calls"
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        schema = (WEATHER if call.function.name == "get_weather" else TIME)["function"]
        jsonschema.validate(json.loads(call.function.arguments), schema["parameters"])


@pytest.mark.parametrize(
    ("tools", "tool_choice"),
    [
        ([WEATHER, TIME], {"type": "function", "function": {"name": "get_weather"}}),
        ([WEATHER], "required"),
    ],
    ids=["named", "required-one-tool"],
)
def test_a_forced_call_is_one_call_that_ends_the_answer(
    client: openai.OpenAI, tools: Any, tool_choice: Any
) -> None:
    # Parallel calls allowed (the default), and the model repeats itself: still one call, done
    # well inside the 64 tokens a get_weather call needs.
    whole = client.chat.completions.create(
        model="gpt-4.1", messages=ASK, tools=tools, tool_choice=tool_choice, max_tokens=64,
        temperature=0,
    )  # fmt: skip
    (call,) = calls_of(whole)
    check_weather_call(*call)
    assert whole.choices[0].finish_reason == "tool_calls"


def test_streamed_and_whole_give_the_same_calls(client: openai.OpenAI) -> None:
    kwargs: Any = dict(model="gpt-4.1", messages=ASK, tools=[WEATHER], tool_choice="required",
                       parallel_tool_calls=False, seed=5, temperature=1.0,
                       max_tokens=100)  # fmt: skip
    whole = client.chat.completions.create(**kwargs)
    validate(whole.model_dump(exclude_unset=True), "CreateChatCompletionResponse")
    assert whole.choices[0].finish_reason == "tool_calls"
    whole_calls = calls_of(whole)
    with client.chat.completions.stream(**kwargs) as stream:
        streamed_calls = calls_of(stream.get_final_completion())
    assert streamed_calls == whole_calls and whole_calls
    for name, arguments in whole_calls:
        check_weather_call(name, arguments)


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    # Greedy: sampled at temperature 1, the small model may ramble inside the arguments past
    # max_tokens, and a call cut short is (rightly) refused when sent back.
    first = client.chat.completions.create(
        model="gpt-4.1", messages=ASK, tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, max_tokens=100, temperature=0,
    )  # fmt: skip
    assert first.choices[0].finish_reason == "tool_calls"
    call = (first.choices[0].message.tool_calls or [])[0]
    history: Any = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    answer = client.chat.completions.create(
        model="gpt-4.1", messages=history, tools=[WEATHER], max_tokens=40
    )
    assert answer.choices[0].message.content


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int


def test_parse_with_a_pydantic_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Describe Berlin as JSON."}],
        response_format=City,
        max_tokens=120,
        seed=2,
    )
    city = completion.choices[0].message.parsed
    assert isinstance(city, City)


def test_json_object_streams_valid_json(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": ALICE}],
        response_format={"type": "json_object"}, stream=True, max_tokens=150, seed=4,
    )  # fmt: skip
    chunks = [c for c in stream]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads(text), dict)


def test_vllms_structured_outputs_hold_the_answer_to_them(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "Is this review positive? 'I loved every minute.'"}]
    choices = ["positive", "negative", "not sure"]
    pattern = "[A-Z][a-z]+ [0-9]{2}"
    answers = ("Answer: yes", "Answer: no")
    cases = (
        ({"choice": choices}, lambda text: text in choices),
        ({"regex": pattern}, lambda text: re.fullmatch(pattern, text)),
        ({"grammar": 'start: "Answer: " ("yes" | "no")'}, lambda text: text in answers),
    )
    for outputs, holds in cases:
        for stream in (False, True):
            reply = client.chat.completions.create(
                model="gpt-4.1", messages=question, max_tokens=40, temperature=1.0, seed=3,
                stream=stream, extra_body={"structured_outputs": outputs},
            )  # fmt: skip
            if stream:
                chunks = list(reply)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                finish = chunks[-1].choices[0].finish_reason
            else:
                text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
            assert holds(text) and finish == "stop", (outputs, text)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4.1", messages=question,
            extra_body={"structured_outputs": {"grammar": "start: ("}},
        )  # fmt: skip
    assert caught.value.body["param"] == "structured_outputs"  # type: ignore[index]


def test_node_sdk_accumulates_the_same_call(server: Server, client: openai.OpenAI) -> None:
    result = node_check(server, "stream_tool_calls.mjs", SEED="7")
    assert result["finish_reason"] == "tool_calls"
    (call,) = result["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    check_weather_call(call["function"]["name"], call["function"]["arguments"])
    with client.chat.completions.stream(
        model="gpt-4.1", messages=ASK, tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, seed=7,
    ) as stream:  # fmt: skip
        python_calls = calls_of(stream.get_final_completion())
    assert python_calls == [(call["function"]["name"], call["function"]["arguments"])]


def test_uncompilable_schema_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4.1",
            messages=ASK,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "odd", "schema": {"$ref": "#/$defs/missing"}},
            },
        )
    assert caught.value.param == "response_format"  # type: ignore[attr-defined]
