"""Small engines and requests for engine tests."""

from __future__ import annotations

import asyncio

import torch

from headrace.config import EngineConfig
from headrace.engine.async_engine import AsyncEngine
from headrace.engine.block_manager import BlockManager
from headrace.engine.llm_engine import LLMEngine, RequestOutput
from headrace.engine.outputs import Priority, SamplingParams
from headrace.engine.request import Request
from headrace.engine.scheduler import Scheduler, SchedulerOutput
from headrace.model.llama import LlamaConfig, LlamaForCausalLM

CPU = torch.device("cpu")


def make_model_config(**overrides: object) -> LlamaConfig:
    fields: dict[str, object] = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)  # type: ignore[arg-type]


def make_model(seed: int = 0, **overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(make_model_config(**overrides))
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.5)
    return model.eval()


def make_engine(
    model: LlamaForCausalLM | None = None,
    *,
    max_model_len: int = 128,
    **config: object,
) -> LLMEngine:
    # Eager unless a test asks for the compiled decode step, which takes seconds to build.
    fields: dict[str, object] = dict(max_num_seqs=4, max_num_batched_tokens=64, enforce_eager=True)
    fields.update(config)
    return LLMEngine(
        model or make_model(),
        EngineConfig(**fields),  # type: ignore[arg-type]
        max_model_len=max_model_len,
        kv_dtype=torch.float32,
        device=CPU,
    )


def make_params(**overrides: object) -> SamplingParams:
    fields: dict[str, object] = dict(max_tokens=8, temperature=0.0)
    fields.update(overrides)
    return SamplingParams(**fields)  # type: ignore[arg-type]


def make_request(
    request_id: str = "r",
    prompt_len: int = 5,
    *,
    priority: Priority = Priority.INTERACTIVE,
    **params: object,
) -> Request:
    """A waiting request; one with a grammar gets its matcher, as LLMEngine.add_request does."""
    prompt = [(7 * i + 3) % 96 for i in range(prompt_len)]
    sampling = make_params(**params)
    matcher = sampling.grammar.matcher() if sampling.grammar is not None else None
    return Request(request_id, prompt, sampling, priority, matcher=matcher)


def make_scheduler(
    *,
    max_num_seqs: int = 4,
    max_num_batched_tokens: int = 16,
    num_blocks: int = 64,
    block_size: int = 8,
    enable_prefix_caching: bool = True,
) -> Scheduler:
    config = EngineConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
    )
    blocks = BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
    return Scheduler(config, blocks)


def computed(step: SchedulerOutput) -> None:
    """Advance a step's requests as the engine would after it (each decode generating 0)."""
    for chunk in step.prefills:
        chunk.request.num_computed_tokens += chunk.num_tokens
    for request in step.decodes:
        request.num_computed_tokens += 1
        request.output_token_ids.append(0)


def run_to_completion(engine: LLMEngine) -> dict[str, list[int]]:
    """Step until idle; return every request's generated tokens."""
    tokens: dict[str, list[int]] = {}
    while engine.has_work:
        for out in engine.step():
            tokens.setdefault(out.request_id, []).extend(out.output.token_ids)
    return tokens


async def wait_until_idle(engine: AsyncEngine, timeout: float = 10) -> None:
    """Poll until nothing runs or waits and every KV-cache block is free."""
    loop = asyncio.get_running_loop()
    blocks = engine._engine.blocks
    deadline = loop.time() + timeout
    while engine.stats().running or engine.stats().waiting or blocks.pool.num_used:
        assert loop.time() < deadline, (engine.stats(), blocks.pool.num_used)
        await asyncio.sleep(0.01)


def run_with_outputs(engine: LLMEngine) -> dict[str, tuple[list[int], RequestOutput]]:
    """Step until idle; each request's tokens and last output."""
    results: dict[str, tuple[list[int], RequestOutput]] = {}
    while engine.has_work:
        for out in engine.step():
            tokens = results.get(out.request_id, ([], out))[0] + out.output.token_ids
            results[out.request_id] = (tokens, out)
    return results
