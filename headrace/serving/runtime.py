"""Everything a server needs at run time, built from the configuration: model, engine, tokenizer."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from headrace.config import EngineConfig, ModelConfig
from headrace.engine.async_engine import AsyncEngine
from headrace.engine.llm_engine import LLMEngine
from headrace.model.kernel_caches import bound_onednn_caches
from headrace.model.loader import load_model
from headrace.model.placement import dtype_reason, resolve_device, resolve_dtype
from headrace.model.source import resolve_model
from headrace.serving.sampling_defaults import SamplingDefaults, load_sampling_defaults
from headrace.text import Tokenizer
from headrace.text.chat_template import read_chat_template
from headrace.text.grammar import GrammarCompiler

__all__ = ["Runtime", "load_runtime"]

logger = logging.getLogger("headrace.serving")


@dataclass(frozen=True)
class Runtime:
    # The engine, stepping on its own thread once started.
    engine: AsyncEngine
    # The model's tokenizer and chat template.
    tokenizer: Tokenizer
    # Names clients may ask for; the first is the model's id in listings.
    model_names: tuple[str, ...]
    # Compiles response formats and forced tool calls for the tokenizer.
    grammars: GrammarCompiler
    # What requests get for the sampling parameters they leave out (--generation-config).
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)


def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> Runtime:
    bound_onednn_caches()  # a long-running server must not grow them without end
    source = resolve_model(model_config.model)
    sampling_defaults = load_sampling_defaults(model_config.generation_config, source)
    logger.info(
        "sampling defaults: %s (--generation-config %s)",
        sampling_defaults.describe(),
        model_config.generation_config,
    )
    device = resolve_device(model_config.device)
    dtype = resolve_dtype(model_config.dtype, device)
    logger.info("dtype %s (%s)", dtype, dtype_reason(model_config.dtype, device))

    def make_engine() -> LLMEngine:
        started = time.perf_counter()
        model = load_model(source.path, dtype, device, quantization=model_config.quantization)
        seconds = time.perf_counter() - started
        logger.info("loaded %s (%s, %s) in %.1f s", source.path, dtype, device, seconds)
        trained_len = model.config.max_position_embeddings
        max_model_len = model_config.max_model_len or trained_len
        if max_model_len > trained_len:
            raise ValueError(
                f"--max-model-len {max_model_len} exceeds the model's context length {trained_len}"
            )
        engine = LLMEngine(
            model, engine_config, max_model_len=max_model_len, kv_dtype=dtype, device=device
        )
        cache = engine.kv_cache
        logger.info(
            "KV cache: %.2f GiB, %d blocks of %d tokens (%d tokens), prefix caching %s",
            cache.bytes / 2**30,
            cache.num_blocks - 1,
            cache.block_size,
            (cache.num_blocks - 1) * cache.block_size,
            "on" if engine_config.enable_prefix_caching else "off",
        )
        return engine

    chat_template = (
        None
        if model_config.chat_template is None
        else read_chat_template(model_config.chat_template)
    )

    def make_text() -> tuple[Tokenizer, GrammarCompiler]:
        tokenizer = Tokenizer.from_path(source.path, chat_template)
        return tokenizer, GrammarCompiler(tokenizer)

    # The tokenizer and its grammar compiler (1.3 s for SmolLM2) are built while the engine's
    # thread loads the model.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="headrace-text") as thread:
        text = thread.submit(make_text)
        engine = AsyncEngine.build(make_engine)
        try:
            tokenizer, grammars = text.result()
        except BaseException:
            engine.shutdown()
            raise
    return Runtime(
        engine=engine,
        tokenizer=tokenizer,
        model_names=model_config.served_model_names or (source.name,),
        grammars=grammars,
        sampling_defaults=sampling_defaults,
    )
