"""Streaming chat completions through a running server with the official OpenAI SDK.

TTFT is submit -> first chunk carrying content; decode rate counts the usage's
completion_tokens (stream_options.include_usage) over the first -> last content chunk.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from timing import StreamTiming

__all__ = ["Chat", "HttpRunner", "random_words", "text_prompt"]

# The messages of one chat completion request.
Chat = list[ChatCompletionMessageParam]

# Plain English words, nearly all one token each with a leading space in a BPE vocabulary.
_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her an which were are this be "
    "had not but first one their also after new two who they has its time year world city "
    "people some many other state during house water school river music team film game more "
    "early most over part small long great under high light story night island field power "
    "north south east west market garden church station village paper summer winter letter "
    "mountain road bridge forest table window morning evening family country history language"
)
_WORDS = _WORD_TEXT.split()


def random_words(rng: random.Random, count: int) -> str:
    """`count` words drawn by `rng`, space-separated: about one token per word."""
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def text_prompt(index: int, num_words: int) -> str:
    """A distinct run of random words, about one token per word."""
    words = random_words(random.Random(index), num_words)
    return f"Passage {index}: {words}. Continue the passage."


class HttpRunner:
    def __init__(
        self, base_url: str, model: str | None, extra_body: Mapping[str, object] | None = None
    ) -> None:
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url = base_url
        self.api_key = os.environ.get("OPENAI_API_KEY", "headrace-bench")
        self.model = model
        # Request fields beyond the OpenAI API's, for every request.
        self.extra_body = {"ignore_eos": True, **(extra_body or {})}

    def run(self, prompts: list[str], max_tokens: int) -> list[StreamTiming]:
        """Sends one user message per prompt, all at once."""
        return self.run_chats([[{"role": "user", "content": p}] for p in prompts], max_tokens)

    def run_chats(self, chats: list[Chat], max_tokens: int) -> list[StreamTiming]:
        """Sends every conversation at once; returns their timings in the same order."""
        return asyncio.run(self._run(chats, max_tokens))

    async def _run(self, chats: list[Chat], max_tokens: int) -> list[StreamTiming]:
        # One client per event loop: its connection pool belongs to the loop.
        async with AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=600
        ) as client:
            if self.model is None:
                self.model = (await client.models.list()).data[0].id
            streams = (self._stream(client, self.model, chat, max_tokens) for chat in chats)
            return list(await asyncio.gather(*streams))

    async def _stream(
        self, client: AsyncOpenAI, model: str, chat: Chat, max_tokens: int
    ) -> StreamTiming:
        timing = StreamTiming(start=time.perf_counter())
        stream = await client.chat.completions.create(
            model=model,
            messages=chat,
            stream=True,
            max_tokens=max_tokens,
            temperature=0,
            stream_options={"include_usage": True},
            # ignore_eos, vLLM's extension for a fixed output length: a server that ignores it
            # may stop early, and the usage then reports the tokens it did produce.
            extra_body=self.extra_body,
        )
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].delta.content:
                timing.token_times.append(now)
            if chunk.usage is not None:
                timing.num_tokens = chunk.usage.completion_tokens
                timing.num_prompt_tokens = chunk.usage.prompt_tokens
        if not timing.num_tokens:
            timing.num_tokens = len(timing.token_times)
        if not timing.token_times:
            raise RuntimeError("the server streamed no content")
        return timing
