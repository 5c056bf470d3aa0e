"""Fakes for serving and API tests: a scripted engine and a byte-level tokenizer."""

from __future__ import annotations

import asyncio
import atexit
import codecs
import json
import shutil
import tempfile
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from headrace.api import create_app
from headrace.auth import Access
from headrace.batch import FileStore, MetadataStore
from headrace.engine.client import EngineClient
from headrace.engine.outputs import (
    EngineStats,
    FinishReason,
    PositionLogprobs,
    Priority,
    SamplingParams,
    TokenLogprob,
    TokenOutput,
)
from headrace.serving import (
    ChatService,
    ModelCatalog,
    ModelLimits,
    Sampling,
    SamplingDefaults,
    TokenizerLike,
)
from headrace.text import TOOL_CALL_FORMATS
from headrace.text.grammar import GrammarCompiler

# The fake tokenizer's vocabulary: one token per byte, then EOS.
EOS = 256
MODEL_NAMES = ("test-model", "alias-model")
REPLY = "Hello, world! How are you?"


class FakeDetokenizer:
    """Whole UTF-8 characters out, text that could start a stop string held back."""

    def __init__(self, stop: Sequence[str], include_stop: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = tuple(stop)
        self._include_stop = include_stop
        self._held = ""
        self.stopped = False

    def push(self, token_ids: list[int]) -> str:
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(bytes(t for t in token_ids if t < EOS))
        hits = [(text.find(stop), stop) for stop in self._stop if stop in text]
        if hits:
            self.stopped = True
            self._held = ""
            start, stop = min(hits)
            return text[: start + len(stop) if self._include_stop else start]
        keep = max(
            (k for k in range(1, len(text) + 1) for s in self._stop if s.startswith(text[-k:])),
            default=0,
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return "" if self.stopped else text


class FakeTokenizer:
    """One token per UTF-8 byte; the chat template is `<role>content\\n` per message."""

    eos_token_ids = frozenset({EOS})
    vocab_size = EOS + 1

    def encode_prompt(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(text.encode())  # no BOS either way

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        kept = [t for t in token_ids if t < EOS or not skip_special_tokens]
        return b"".join(self.token_bytes(t) for t in kept).decode(errors="replace")

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [self.token_bytes(token).decode(errors="replace") for token in token_ids]

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id]) if token_id < EOS else b"<eos>"

    # Replies are read for tool calls in headrace's generic syntax: <tool_call>{...}</tool_call>.
    tool_call_format = TOOL_CALL_FORMATS["generic"]

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> list[int]:
        if messages[-1]["role"] == "assistant" and not continue_final_message:
            raise ValueError("the conversation must end with a user turn")
        text = "".join(f"<{m['role']}>{_text(m.get('content'))}\n" for m in messages)
        if variables:
            text = f"<variables>{json.dumps(dict(variables))}\n" + text
        if tools:
            text = f"<tools>{json.dumps(list(tools))}\n" + text
        if continue_final_message:  # the final message's end-of-turn left out
            return self.encode_prompt(text.removesuffix("\n"))
        return self.encode_prompt(text + ("<assistant>" if add_generation_prompt else ""))

    def detokenizer(
        self,
        stop: Sequence[str] = (),
        *,
        keep_special: Sequence[str] = (),
        include_stop: bool = False,
    ) -> FakeDetokenizer:
        return FakeDetokenizer(stop, include_stop)


def _text(content: str | list[dict[str, str]] | None) -> str:
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content)
    return content or ""


def fake_logprobs(tokens: Sequence[int], top: int) -> tuple[PositionLogprobs, ...]:
    """Made-up log-probabilities: each token the likeliest at its position, at -(token % 7) / 4,
    followed by the next token ids, each 1 less likely."""
    positions = []
    for token in tokens:
        logprob = -(token % 7) / 4
        alternatives = [TokenLogprob((token + i) % EOS, logprob - i) for i in range(top)]
        positions.append(PositionLogprobs(TokenLogprob(token, logprob), tuple(alternatives)))
    return tuple(positions)


class FakeEngine:
    """An EngineClient that answers every request with the same scripted tokens.

    It honours max_tokens, the context length and stop_token_ids, sleeps `step_delay` before
    each token, and records every request, abort, and stream closed before it finished.
    """

    def __init__(
        self,
        reply: Sequence[int] | None = None,
        *,
        max_model_len: int = 256,
        vocab_size: int = 512,
        step_delay: float = 0.0,
        raise_after: int | None = None,
        abort_after: int | None = None,
    ) -> None:
        # Tokens every request gets, in order; EOS-terminated by default.
        self.reply = list(reply) if reply is not None else [*REPLY.encode(), EOS]
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.block_size = 16
        self.kv_cache_blocks = 1024
        # Seconds before each token.
        self.step_delay = step_delay
        # Raise RuntimeError after this many tokens.
        self.raise_after = raise_after
        # Finish with "abort" after this many tokens, as an engine shutting down would.
        self.abort_after = abort_after
        # Prompt and params of every request, by id.
        self.prompts: dict[str, list[int]] = {}
        self.params: dict[str, SamplingParams] = {}
        # The request each waits for (generate's `after`), by id.
        self.after: dict[str, str | None] = {}
        # The priority each runs at, by id.
        self.priorities: dict[str, Priority] = {}
        # Ids passed to abort().
        self.aborted: list[str] = []
        # Ids of the requests abort_all() ended.
        self.ended: set[str] = set()
        # Ids whose stream was closed or cancelled before it finished.
        self.closed_early: list[str] = []
        # Requests being generated right now, and those of them at batch priority.
        self.running = 0
        self.batch_running = 0
        # Requests the engine reports waiting for a place in the batch, and those of them at
        # batch priority; tests set them.
        self.waiting = 0
        self.batch_waiting = 0
        # Set once any request has produced its first token.
        self.started = asyncio.Event()

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        after: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> AsyncGenerator[TokenOutput, None]:
        self.prompts[request_id] = prompt_token_ids
        self.after[request_id] = after
        self.priorities[request_id] = priority
        self.params[request_id] = params
        batch = priority is Priority.BATCH
        self.running += 1
        self.batch_running += batch
        finished = False
        prompt = len(prompt_token_ids)
        scored = None
        if params.prompt_logprobs is not None:
            scored = fake_logprobs(prompt_token_ids[1:], params.prompt_logprobs)
        try:
            if params.max_tokens == 0:
                finished = True
                yield TokenOutput([], "length", prompt, 0, 0, prompt_logprobs=scored, queued_s=0.0)
                return
            for n, token in enumerate(self.reply, start=1):
                await asyncio.sleep(self.step_delay)
                if self.raise_after is not None and n > self.raise_after:
                    raise RuntimeError("engine exploded")
                ended = request_id in self.ended
                if ended or (self.abort_after is not None and n > self.abort_after):
                    finished = True
                    yield TokenOutput([], "abort", prompt, n - 1, 0, queued_s=0.0)
                    return
                finish: FinishReason | None = None
                tokens = [token]
                if token in params.stop_token_ids:
                    finish, tokens = "stop", []  # a stop token is not part of the output
                elif n >= params.max_tokens or prompt + n >= self.max_model_len:
                    finish = "length"
                finished = finish is not None
                self.started.set()
                logprobs = stop_logprobs = None
                if params.logprobs is not None:
                    logprobs = fake_logprobs(tokens, params.logprobs)
                    if not tokens:  # the stop token's, apart
                        (stop_logprobs,) = fake_logprobs([token], params.logprobs)
                yield TokenOutput(
                    tokens,
                    finish,
                    prompt,
                    n,
                    0,
                    logprobs=logprobs,
                    stop_logprobs=stop_logprobs,
                    prompt_logprobs=scored if n == 1 else None,
                    queued_s=0.0,
                )
                if finished:
                    return
            finished = True
            yield TokenOutput([], "stop", prompt, len(self.reply), 0, queued_s=0.0)
        finally:
            self.running -= 1
            self.batch_running -= batch
            if not finished:  # as AsyncEngine does: the request is aborted
                self.closed_early.append(request_id)
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def abort_all(self) -> None:
        self.ended.update(self.prompts)

    def start(self) -> None:
        """Nothing to start: generate() runs on the caller's loop."""

    def shutdown(self) -> None:
        """Nothing to stop."""

    def stats(self) -> EngineStats:
        return EngineStats(
            running=self.running,
            waiting=self.waiting,
            batch_running=self.batch_running,
            batch_waiting=self.batch_waiting,
        )


@dataclass(frozen=True)
class FakeServed:
    """What create_app serves."""

    # The engine.
    engine: FakeEngine = field(default_factory=FakeEngine)
    # The tokenizer.
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    # Served model names.
    model_names: tuple[str, ...] = MODEL_NAMES
    # Grammars for constrained decoding (the fake engine ignores them); None turns it off.
    grammars: GrammarCompiler | None = None
    # What requests get for the sampling parameters they leave out.
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)


class FakeClock:
    """A clock for the rate limiter and key expiry that moves only when told to."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        # Seconds, as the clock reads now.
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(
    engine: FakeEngine | None = None,
    api_keys: Sequence[str] = (),
    grammars: GrammarCompiler | None = None,
    access: Access | None = None,
    files: FileStore | None = None,
    **limits: int,
) -> FastAPI:
    """The app on fakes; `access`, else `api_keys` as static keys, says who may use it;
    `files`: its Files API's store, else one data directory shared by every such app;
    `limits` are create_app's max_waiting, max_body_bytes and max_file_bytes."""
    served = FakeServed(engine=engine or FakeEngine(), grammars=grammars)
    files = files or shared_files()
    return create_app(served, access=access or Access(api_keys), files=files, **limits)


@cache
def shared_files() -> FileStore:
    """The files of one temporary data directory, for the apps of tests that do not look at
    them (a store each would hold a lock and a database open per app); removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="headrace-test-data-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return FileStore(MetadataStore(directory))


def make_sampling(
    engine: EngineClient, tokenizer: TokenizerLike, defaults: SamplingDefaults | None = None
) -> Sampling:
    """Sampling for the engine's model, with the model's defaults if given."""
    limits = ModelLimits(engine.max_model_len, engine.vocab_size, tokenizer.eos_token_ids)
    return Sampling(limits, defaults or SamplingDefaults())


def make_chat_service(
    engine: EngineClient | None = None,
    tokenizer: TokenizerLike | None = None,
    **options: Any,
) -> ChatService:
    """A chat service on the fakes (or the engine and tokenizer given); `options` are
    ChatService's."""
    engine = engine or FakeEngine()
    tokenizer = tokenizer or FakeTokenizer()
    sampling = make_sampling(engine, tokenizer)
    return ChatService(engine, tokenizer, ModelCatalog(MODEL_NAMES), sampling, **options)


def make_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    """An in-process client; pass raise_app_exceptions=False to see 500 responses."""
    transport = httpx.ASGITransport(app=app, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def chat_body(**overrides: Any) -> dict[str, Any]:
    """A valid chat completion request, with `overrides` applied."""
    body: dict[str, Any] = {
        "model": MODEL_NAMES[0],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    return {**body, **overrides}
