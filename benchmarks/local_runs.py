"""In-process runs on identical weights: headrace's LLMEngine and transformers' generate().

Both sides are timed the same way: the clock starts before the requests are submitted and
each token is stamped when it reaches the caller (engine.step() returning it; a generate()
streamer's put()). Greedy decoding, no stop tokens: every stream yields exactly max_tokens.
"""

from __future__ import annotations

import time

import torch
import transformers
from timing import StreamTiming
from transformers.generation.streamers import BaseStreamer

from headrace.config import EngineConfig
from headrace.engine.llm_engine import LLMEngine
from headrace.engine.outputs import SamplingParams
from headrace.model.llama import LlamaForCausalLM

__all__ = ["HeadraceRunner", "TransformersRunner", "build_transformers_model"]

# Pad id for transformers' left padding; never attended to, so any id serves.
_PAD_ID = 0


class HeadraceRunner:
    """Drives an LLMEngine synchronously: add every request, then step until none is left."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        config: EngineConfig,
        *,
        max_model_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.engine = LLMEngine(
            model, config, max_model_len=max_model_len, kv_dtype=dtype, device=device
        )
        self._next_id = 0

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], max_tokens: int) -> list[StreamTiming]:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        streams: dict[str, StreamTiming] = {}
        start = time.perf_counter()
        for prompt in prompts:
            request_id = f"bench-{self._next_id}"
            self._next_id += 1
            streams[request_id] = StreamTiming(start=start, num_prompt_tokens=len(prompt))
            self.engine.add_request(request_id, prompt, params)
        while self.engine.has_work:
            outputs = self.engine.step()
            now = time.perf_counter()
            for out in outputs:
                stream = streams[out.request_id]
                stream.token_ids += out.output.token_ids
                stream.token_times += [now] * len(out.output.token_ids)
        for stream in streams.values():
            stream.num_tokens = len(stream.token_ids)
        return list(streams.values())


class _TimingStreamer(BaseStreamer):
    """Stamps every batch of new tokens generate() hands out (its first put() is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if self._seen_prompt:
            self.times.append(now)
        self._seen_prompt = True

    def end(self) -> None:
        pass


class TransformersRunner:
    """Runs generate() on a batch of prompts, left-padded to the longest."""

    def __init__(self, model: transformers.LlamaForCausalLM, device: torch.device) -> None:
        self.model = model
        self.device = device

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], max_tokens: int) -> list[StreamTiming]:
        width = max(len(p) for p in prompts)
        rows = [[_PAD_ID] * (width - len(p)) + p for p in prompts]
        masks = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        input_ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        attention_mask = torch.tensor(masks, dtype=torch.long, device=self.device)
        streamer = _TimingStreamer()
        start = time.perf_counter()
        output = self.model.generate(
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=_PAD_ID,
            streamer=streamer,
        )
        generated = output[:, width:].tolist()
        return [
            StreamTiming(
                start=start,
                token_times=list(streamer.times),
                num_tokens=len(tokens),
                num_prompt_tokens=len(prompt),
                token_ids=tokens,
            )
            for prompt, tokens in zip(prompts, generated, strict=True)
        ]


def build_transformers_model(
    model: LlamaForCausalLM, dtype: torch.dtype, device: torch.device
) -> transformers.LlamaForCausalLM:
    """A transformers Llama of the same shape holding headrace's (dequantized) weights."""
    c = model.config
    if c.rope_scaling is not None:
        raise SystemExit("rope scaling is not mapped to transformers here; use a plain Llama")
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_theta,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
        attention_bias=c.attention_bias,
    )
    hf_model = transformers.LlamaForCausalLM(config)
    hf_model.load_state_dict(model.state_dict(), strict=True)
    return hf_model.to(device=device, dtype=dtype).eval()
