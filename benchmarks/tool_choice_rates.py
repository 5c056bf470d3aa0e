"""How often `tool_choice: "auto"` calls the tool when it should, and when it should not.

    python benchmarks/tool_choice_rates.py [--samples 3] [--flags ...] [--url URL]

Starts `headrace serve` on the default model (or uses --url), offers the guide's get_weather
tool with 21 questions that need it (the guide's "What's the weather in Berlin?" and 20 like it)
and 20 that do not, each --samples times at the server's default sampling (the model's
--generation-config), and prints a markdown table: the share of answers that called the tool.
Targets (issue 12): at least 90% of the first, at most 10% of the second.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from collections.abc import Sequence

import openai
from machine import cpu_model
from servers import headrace_server

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"],
        },
    },
}
_NEEDS_TOOL = [
    "What's the weather in Berlin?",
    "What is the weather like in Paris today?",
    "How's the weather in Tokyo right now?",
    "Is it raining in London?",
    "What's the temperature in New York?",
    "Tell me the current weather in Madrid.",
    "Will I need an umbrella in Amsterdam today?",
    "How hot is it in Cairo at the moment?",
    "Is it sunny in Rome?",
    "What are the weather conditions in Sydney?",
    "Check the weather in Toronto for me.",
    "Is it snowing in Moscow?",
    "What's the weather in San Francisco?",
    "How cold is it in Oslo today?",
    "Give me the weather for Lisbon.",
    "What's it like outside in Chicago right now?",
    "Do I need a jacket in Dublin today?",
    "What's the current weather in Mumbai?",
    "Is it windy in Wellington?",
    "Weather in Vienna?",
    "Can you look up the weather in Seoul?",
]
_NO_TOOL = [
    "What is 2 + 2?",
    "Write a haiku about the sea.",
    "Who wrote Romeo and Juliet?",
    "Translate 'good morning' into French.",
    "What is the capital of Italy?",
    "Explain what a noun is.",
    "Tell me a joke.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Name three fruits.",
    "What is the opposite of hot?",
    "Spell the word 'cat' backwards.",
    "Hi! How are you?",
    "What is the largest planet in the solar system?",
    "Give me a synonym for happy.",
    "How many days are in a week?",
    "What does CPU stand for?",
    "Write one sentence about dogs.",
    "What is 10 times 3?",
    "Say hello in Spanish.",
]


def calls_tool(client: openai.OpenAI, model: str, question: str) -> bool:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        tools=[_WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        max_tokens=64,
    )
    return bool(reply.choices[0].message.tool_calls)


def rate(client: openai.OpenAI, model: str, questions: Sequence[str], samples: int) -> float:
    asks = [question for question in questions for _ in range(samples)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        called = list(pool.map(lambda q: calls_tool(client, model, q), asks))
    return sum(called) / len(called)


def measure(url: str, samples: int) -> tuple[float, float]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    return rate(client, model, _NEEDS_TOOL, samples), rate(client, model, _NO_TOOL, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--url", help="a running server to ask instead of starting one")
    parser.add_argument("--flags", nargs=argparse.REMAINDER, default=[], help="for headrace")
    args = parser.parse_args()
    if args.url:
        wanted, unwanted = measure(args.url, args.samples)
    else:
        with headrace_server("tool-choice", args.flags) as server:
            wanted, unwanted = measure(server.url, args.samples)
    print(f"CPU: {cpu_model()}; {args.samples} samples of each question\n")
    print("| questions | answers that called get_weather | target |")
    print("|---|---|---|")
    print(f"| {len(_NEEDS_TOOL)} that need the tool | {wanted:.0%} | at least 90% |")
    print(f"| {len(_NO_TOOL)} that do not | {unwanted:.0%} | at most 10% |")


if __name__ == "__main__":
    main()
