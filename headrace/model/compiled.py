"""The decode step compiled by torch.compile (TorchInductor) into a few fused C++ loops.

In eager mode a decode step of a small model is mostly dispatch: each layer's norms, rope,
residual adds and activation are a dozen small operators apiece, so that on a 2-core CPU
SmolLM2-135M spends a third of its step between its matmuls. Compiled, they become a handful
of fused loops around the same oneDNN matmuls and the `headrace::decode_attention` operator.

One graph serves every decode step: the batch's sizes (sequences, block-table width) are
marked dynamic, and sizes 0 and 1 are not specialized, so that the step compiled at start
is never compiled again. Steps with prefill chunks stay eager: they are few, dominated by
their matmuls, and their chunk layout would compile a graph per shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.fx.experimental._config as shapes_config
from torch import Tensor

from headrace.model.attention import AttentionBatch
from headrace.model.llama import LlamaForCausalLM
from headrace.model.progress import every_while

__all__ = ["DecodeStep", "compile_decode"]

logger = logging.getLogger("headrace.model")

# The file, in TorchInductor's cache directory, that keeps how long the last compilation took:
# an estimate only while that cache holds what the compilation left there.
_LAST_COMPILE = "headrace-last-compile-seconds"

# (input_ids [n], batch of n decodes, the KV cache's layers) -> logits [n, V] in float32
DecodeStep = Callable[[Tensor, AttentionBatch, list[tuple[Tensor, Tensor]]], Tensor]


def compile_decode(
    model: LlamaForCausalLM, kv_caches: list[tuple[Tensor, Tensor]], block_size: int
) -> DecodeStep | None:
    """The model's decode step compiled and warmed up, or None where compiling fails.

    Compiling takes about 20-40 s on 2 cores, about 5 s once TorchInductor's on-disk cache
    holds the graph. It fails without a C++ compiler, in which case the engine runs eagerly.
    The warm-up writes to the null block only, which no sequence attends to.
    """
    # Sizes of 1 would otherwise be constants of the graph, compiled again for larger ones.
    shapes_config.backed_size_oblivious = True

    def decode(input_ids: Tensor, batch: AttentionBatch, kv: list[tuple[Tensor, Tensor]]) -> Tensor:
        return model.compute_logits(model(input_ids, batch, kv))

    options: dict[str, str | int | bool | Callable[..., Any]] = {
        # Rounding to bfloat16 wherever eager does keeps the tokens those of eager decoding.
        "emulate_precision_casts": True,
        # The model is not changed after loading, so the graph checks the step's inputs
        # only: checking its ~4,000 guards on the modules cost 0.55 ms a step, 0.05 without.
        "guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe,
    }
    if model.model.rope.dtype == torch.float32:
        # Inductor (torch 2.13) writes float32 rope in 8-float tiles but stores whole 16-float
        # AVX-512 vectors: the last query row overran its buffer by 32 bytes and corrupted the
        # heap (SmolLM2-135M aborted at start with --dtype float32 --quantization none on AVX-512
        # CPUs). 8-float vectors, AVX2's, store what they load; bfloat16 stores exact counts.
        options["cpp.simdlen"] = 256
    compiled = torch.compile(decode, dynamic=None, options=options)

    def step(input_ids: Tensor, batch: AttentionBatch, kv: list[tuple[Tensor, Tensor]]) -> Tensor:
        # Compiling again while serving would stall every stream for seconds: a step the
        # graph does not cover runs eagerly instead.
        with torch.compiler.set_stance("eager_on_recompile"):
            logits: Tensor = compiled(input_ids, batch, kv)
            return logits

    logger.info(
        "compiling the decode step in the background (%s); steps run eagerly until then",
        _estimate(),
    )
    started = time.perf_counter()

    def say(seconds: float) -> None:
        logger.info("compiling the decode step: %.0f s so far (%s)", seconds, _estimate())

    try:  # torch.compile compiles on the first call
        with every_while(say), torch.inference_mode():
            # One sequence, then two with wider tables: both must run the one graph. The
            # sizes marked dynamic here are dynamic in it for good; marking them on every
            # step would cost 0.8 ms a step.
            for n, width in ((1, 1), (2, 2)):
                batch = _null_batch(n, width, block_size, kv_caches[0][0].device)
                input_ids = torch.zeros_like(batch.positions)
                for tensor, dims in (
                    (input_ids, 0),
                    (batch.slot_mapping, 0),
                    (batch.positions, 0),
                    (batch.decode_block_tables, (0, 1)),
                    (batch.decode_lens, 0),
                ):
                    torch._dynamo.mark_dynamic(tensor, dims)
                compiled(input_ids, batch, kv_caches)
    except Exception as error:  # any failure to compile means running eagerly
        logger.warning("torch.compile failed, decoding eagerly: %s", error)
        return None
    seconds = time.perf_counter() - started
    logger.info("compiled the decode step in %.1f s: decoding compiled from now on", seconds)
    _remember(seconds)
    return step


def _estimate() -> str:
    """How long compiling took last time with this compile cache, in words."""
    try:
        return f"about {float((_last_compile()).read_text()):.0f} s last time"
    except (OSError, ValueError):
        return "20-60 s the first time on 2 cores, seconds once TorchInductor's cache holds it"


def _remember(seconds: float) -> None:
    try:
        _last_compile().parent.mkdir(parents=True, exist_ok=True)
        _last_compile().write_text(f"{seconds:.1f}\n")
    except OSError:
        pass  # an estimate only


def _last_compile() -> Path:
    # Imported here: torch._inductor takes a second to import, which the compile pays anyway.
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir

    return Path(inductor_cache_dir()) / _LAST_COMPILE


def _null_batch(n: int, width: int, block_size: int, device: torch.device) -> AttentionBatch:
    # n decodes at position 0 of the null block, with tables `width` blocks wide
    return AttentionBatch(
        slot_mapping=torch.zeros(n, dtype=torch.long, device=device),
        positions=torch.zeros(n, dtype=torch.long, device=device),
        decode_block_tables=torch.zeros(n, width, dtype=torch.long, device=device),
        decode_lens=torch.ones(n, dtype=torch.long, device=device),
        prefills=(),
    )
