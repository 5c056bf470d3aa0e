"""Streaming chat completions through a running server with the official OpenAI SDK.

TTFT is submit -> first chunk carrying content; decode rate counts the usage's
completion_tokens (stream_options.include_usage) over the first -> last content chunk.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from openai import AsyncOpenAI
from timing import StreamTiming

__all__ = ["HttpRunner", "text_prompt"]

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


def text_prompt(index: int, num_words: int) -> str:
    """A distinct run of random words, about one token per word."""
    rng = random.Random(index)
    words = " ".join(rng.choice(_WORDS) for _ in range(num_words))
    return f"Passage {index}: {words}. Continue the passage."


class HttpRunner:
    def __init__(self, base_url: str, model: str | None) -> None:
        base_url = base_url.rstrip("/")
        if not base_url.endswith("/v1"):
            base_url += "/v1"
        self.base_url = base_url
        self.api_key = os.environ.get("OPENAI_API_KEY", "headrace-bench")
        self.model = model

    def run(self, prompts: list[str], max_tokens: int) -> list[StreamTiming]:
        return asyncio.run(self._run(prompts, max_tokens))

    async def _run(self, prompts: list[str], max_tokens: int) -> list[StreamTiming]:
        # One client per event loop: its connection pool belongs to the loop.
        async with AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=600
        ) as client:
            if self.model is None:
                self.model = (await client.models.list()).data[0].id
            streams = (self._stream(client, self.model, p, max_tokens) for p in prompts)
            return list(await asyncio.gather(*streams))

    @staticmethod
    async def _stream(
        client: AsyncOpenAI, model: str, prompt: str, max_tokens: int
    ) -> StreamTiming:
        timing = StreamTiming(start=time.perf_counter())
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            max_tokens=max_tokens,
            temperature=0,
            stream_options={"include_usage": True},
            # vLLM's extension for a fixed output length; a server that ignores it may stop early,
            # and the usage then reports the tokens it did produce.
            extra_body={"ignore_eos": True},
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
