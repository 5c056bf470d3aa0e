"""The engine step: schedule, run the model, update the requests and hand out what they produced."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass

import torch

from headrace.config import EngineConfig
from headrace.engine.block_manager import BlockManager
from headrace.engine.kv_cache import KVCache, bytes_per_token, num_blocks_for
from headrace.engine.outputs import (
    EngineStats,
    PositionLogprobs,
    Priority,
    SamplingParams,
    TokenOutput,
)
from headrace.engine.request import Request, isolated
from headrace.engine.runner import ModelRunner, RunnerOutput
from headrace.engine.scheduler import Scheduler, SchedulerOutput
from headrace.model.compiled import compile_decode
from headrace.model.llama import LlamaForCausalLM

__all__ = ["LLMEngine", "RequestOutput"]

logger = logging.getLogger("headrace.engine")

# The GIL's switch interval while the decode step compiles beside the serving threads.
_COMPILING_SWITCH_INTERVAL_S = 0.0001


@dataclass(frozen=True)
class RequestOutput:
    # The request the output belongs to.
    request_id: str
    # What it produced in this step.
    output: TokenOutput
    # Why the engine failed the request (finish_reason "abort"), when it did.
    error: str | None = None


class LLMEngine:
    def __init__(
        self,
        model: LlamaForCausalLM,
        config: EngineConfig,
        *,
        max_model_len: int,
        kv_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.max_model_len = max_model_len
        self.device = device
        model_config = model.config
        self.vocab_size = model_config.vocab_size
        num_blocks = num_blocks_for(
            config.kv_cache_memory,
            block_size=config.block_size,
            bytes_per_token=bytes_per_token(model_config, kv_dtype),
            max_num_seqs=config.max_num_seqs,
            max_model_len=max_model_len,
        )
        self.kv_cache = KVCache(
            model_config,
            num_blocks=num_blocks,
            block_size=config.block_size,
            dtype=kv_dtype,
            device=device,
        )
        self.blocks = BlockManager(
            num_blocks, config.block_size, enable_prefix_caching=config.enable_prefix_caching
        )
        self.scheduler = Scheduler(config, self.blocks)
        self.runner = ModelRunner(model, self.kv_cache, device)
        self._requests: dict[str, Request] = {}
        # Compiles the decode step while the engine decodes eagerly (CPU only: on CUDA it is
        # untested, and eager is correct everywhere); None when nothing is compiled.
        self._compiler: threading.Thread | None = None
        if not config.enforce_eager and device.type == "cpu":
            self._compiler = threading.Thread(
                target=self._compile_decode,
                args=(model, config.block_size),
                name="headrace-compile",
                daemon=True,  # a server stopped meanwhile does not wait for it
            )
            self._compiler.start()

    def _compile_decode(self, model: LlamaForCausalLM, block_size: int) -> None:
        """Compiles the decode step and hands it to the runner, whose next decode step takes
        it: the steps before it are eager, with the same tokens."""
        # Compiling is mostly Python: at the default 5 ms switch interval, each of an eager
        # step's hundreds of operators would wait for the GIL that long, and a step take seconds.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_COMPILING_SWITCH_INTERVAL_S)
        try:
            step = compile_decode(model, self.kv_cache.layers, block_size)
        finally:
            sys.setswitchinterval(switch_interval)
        if step is not None:
            self.runner.decode_step = step

    @property
    def compiling(self) -> bool:
        """Whether the decode step is still being compiled (the engine decodes eagerly)."""
        return self._compiler is not None and self._compiler.is_alive()

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Waits for the decode step's compilation, if any, to end; whether it has."""
        if self._compiler is not None:
            self._compiler.join(timeout)
        return not self.compiling

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=self.scheduler.num_waiting(),
            kv_cache_usage=self.blocks.usage,
            num_preemptions=self.scheduler.num_preemptions,
            batch_running=self.scheduler.num_running(Priority.BATCH),
            batch_waiting=self.scheduler.num_waiting(Priority.BATCH),
            compiling=self.compiling,
        )

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        after: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> None:
        """Queue a request; `after`: a live request with the same prompt, to wait for (see
        Scheduler), unless it runs at another priority; `priority`: how urgently it runs."""
        assert request_id not in self._requests, f"duplicate request id {request_id}"
        room = self.max_model_len - min(params.max_tokens, 1)  # for one token, unless it scores
        assert 0 < len(prompt_token_ids) <= room, "prompt must fit the context"
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        matcher = params.grammar.matcher() if params.grammar is not None else None
        leader = None if after is None else self._requests.get(after)
        if leader is not None and leader.priority is not priority:
            leader = None  # queued apart, it could be admitted after its follower
        request = Request(
            request_id,
            prompt_token_ids,
            params,
            priority,
            generator=generator,
            matcher=matcher,
            leader=leader,
        )
        self._requests[request_id] = request
        self.scheduler.add(request)

    def abort(self, request_id: str) -> None:
        request = self._requests.pop(request_id, None)
        if request is not None:
            self.scheduler.finish(request)

    def abort_all(self) -> list[RequestOutput]:
        """End every request with finish_reason "abort"; return their last outputs."""
        requests = list(self._requests.values())
        for request in requests:
            request.finish_reason = "abort"
            self.abort(request.request_id)
        return [self._output(request, len(request.output_token_ids)) for request in requests]

    def step(self) -> list[RequestOutput]:
        """Schedule, run the model, update the requests with what it produced.

        A request whose own part of the step fails ends alone, with finish_reason "abort" and the
        error; a failure of the model ends every request of the step that way. Either way the
        engine goes on with the rest.
        """
        scheduled = self.scheduler.schedule()
        if scheduled.is_empty:
            return []
        try:
            result = self.runner.execute(scheduled)
        except Exception as exc:
            return self._fail_step(scheduled, exc)
        return self._update_from_output(scheduled, result)

    def _update_from_output(
        self, scheduled: SchedulerOutput, result: RunnerOutput
    ) -> list[RequestOutput]:
        """The one place a step's results change its requests: computed tokens, cached blocks,
        log-probabilities, new tokens and finishes."""
        scored: list[Request] = []
        for chunk in scheduled.prefills:
            request = chunk.request
            request.num_computed_tokens += chunk.num_tokens
            request.prompt_logprobs += result.prompt_logprobs.get(request, [])
            self.blocks.cache_full_blocks(request)
            if request.params.max_tokens == 0 and request.num_computed_tokens == request.num_tokens:
                request.finish_reason = "length"  # scored, and nothing to generate
                scored.append(request)
        for request in scheduled.decodes:
            request.num_computed_tokens += 1
            self.blocks.cache_full_blocks(request)
        outputs = [
            self._update(request, token, result.logprobs.get(request))
            for request, token in result.tokens.items()
        ]
        return outputs + [self._update(request) for request in scored]

    def _fail_step(self, scheduled: SchedulerOutput, exc: Exception) -> list[RequestOutput]:
        requests = scheduled.requests
        logger.exception("the model failed a step of %d requests", len(requests))
        for request in requests:
            request.error = f"the model failed: {type(exc).__name__}: {exc}"
        return [self._update(request) for request in requests]

    def _update(
        self, request: Request, token: int | None = None, logprobs: PositionLogprobs | None = None
    ) -> RequestOutput:
        """Hand the request its new token, if any (with its log-probabilities, if asked for);
        take it out once it is done."""
        num_output_tokens = len(request.output_token_ids)
        if token is not None:
            isolated(request, self._append, request, token, logprobs)
        if request.error is not None:
            request.finish_reason = "abort"
        if request.finish_reason is not None:
            del self._requests[request.request_id]
            self.scheduler.finish(request)
        return self._output(request, num_output_tokens)

    def _append(self, request: Request, token: int, logprobs: PositionLogprobs | None) -> None:
        """Take the token: a stop token, a complete grammar or the length limit ends the request."""
        request.num_generated_tokens += 1
        params = request.params
        self._advance_grammar(request, token)
        if request.error is not None:
            return
        if token in params.stop_token_ids:
            request.finish_reason = "stop"
            request.stop_logprobs = logprobs
            return
        request.output_token_ids.append(token)
        if logprobs is not None:
            request.output_logprobs.append(logprobs)
        out_of_room = request.num_tokens >= self.max_model_len
        if request.matcher is not None and request.matcher.is_stopped():
            request.finish_reason = "stop"
        elif request.num_generated_tokens >= params.max_tokens or out_of_room:
            request.finish_reason = "length"

    @staticmethod
    def _advance_grammar(request: Request, token: int) -> None:
        """Feed the token to the request's grammar; fail the request if the grammar refuses it."""
        matcher = request.matcher
        if matcher is None or (matcher.consume_token(token) and not matcher.is_error()):
            return
        logger.error("request %s: %s", request.request_id, matcher.get_error())
        request.error = f"the output's grammar refused token {token}"

    @staticmethod
    def _output(request: Request, first: int) -> RequestOutput:
        """What the request produced from its `first` output token on."""
        params = request.params
        output = TokenOutput(
            token_ids=request.output_token_ids[first:],
            finish_reason=request.finish_reason,
            num_prompt_tokens=len(request.prompt_token_ids),
            num_cached_tokens=request.num_cached_tokens,
            num_generated_tokens=request.num_generated_tokens,
            logprobs=None if params.logprobs is None else tuple(request.output_logprobs[first:]),
            stop_logprobs=request.stop_logprobs,
            prompt_logprobs=(
                tuple(request.prompt_logprobs)
                if params.prompt_logprobs is not None and first == 0
                else None
            ),
            queued_s=(
                None if request.scheduled_at is None else request.scheduled_at - request.arrived_at
            ),
        )
        return RequestOutput(request.request_id, output, request.error)
