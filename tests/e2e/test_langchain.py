"""LangChain's ChatOpenAI (langchain-openai), unchanged, against the real server: a reply streams
with its usage, a bound tool is called with its arguments, and structured output parses."""

from __future__ import annotations

import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def chat_model(server: Server, max_tokens: int) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key=SecretStr(server.api_key),
        model="gpt-4.1",
        temperature=0,
        max_completion_tokens=max_tokens,
        stream_usage=True,
        max_retries=0,
    )


def get_weather(location: str) -> str:
    """Get current weather for a location."""
    return "sunny"


class City(BaseModel):
    name: str
    country: str


def test_a_reply_streams_with_its_usage(server: Server) -> None:
    chunks = list(chat_model(server, 16).stream("Name three colours."))
    assert sum(1 for chunk in chunks if chunk.content) > 1
    (usage,) = [chunk.usage_metadata for chunk in chunks if chunk.usage_metadata]
    assert usage["output_tokens"] == 16 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_a_bound_tool_is_called(server: Server) -> None:
    model = chat_model(server, 64).bind_tools([get_weather], tool_choice="get_weather")
    message = model.invoke("What's the weather in Berlin?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    assert isinstance(call["args"]["location"], str) and call["args"]["location"].strip()
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_structured_output_parses(server: Server) -> None:
    city = (
        chat_model(server, 64)
        .with_structured_output(City)
        .invoke("Paris is a city in which country?")
    )
    assert isinstance(city, City) and city.name.strip() and city.country.strip()
