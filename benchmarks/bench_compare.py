"""headrace against llama.cpp's llama-server, or vLLM's CPU wheel, on the same weights, one
server after the other.

    python benchmarks/bench_compare.py [--quick] [--llama-server PATH] [--dtype bfloat16]
                                       [--peer-types F16 stored vllm] [--avx2]

Pairs of servers load the same weights of the default model (SmolLM2-135M-Instruct, GGUF
Q4_1), one table each: for a --peer-types type, both serve the file requantized to that type by
llama-quantize; for `stored`, both serve the file's own quantized weights; for `vllm`, vLLM's
CPU wheel and headrace both serve the file dequantized into a Hugging Face directory of
bfloat16 weights (benchmarks/vllm_cpu.py installs vLLM apart). headrace runs with
`--quantization auto` and activations in --dtype: it keeps the weights as stored where it has
kernels for them (the quantized types; F16 and BF16 under float32 activations), else converts
them to --dtype at load (F16 under bfloat16, for oneDNN). Each server is started on loopback,
warmed up, measured and stopped before the next.
One streaming client drives both through /v1/chat/completions (greedy, ignore_eos, a fixed
max_tokens) with prompts never sent before, so no prefix cache can answer them (but for the
prefix shared on purpose). The metrics follow vLLM's benchmark_serving: TTFT is submit -> first
content chunk, ITL the gaps between content chunks, TPOT (last - first) / (tokens - 1), output
tok/s all completion tokens of a level over its wall time. Workloads: one stream; all requests
of each --levels at once, with GET /health timed every 100 ms during the largest; a fresh
--prefix-len system prompt shared by --prefix-streams streams once a first request has cached
it. Prints one markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from contention import ForeignCpu
from http_runs import Chat, HttpRunner, random_words
from llama_cpp import LlamaCpp, peers_dir
from machine import cpu_model
from openai.types.chat import ChatCompletionUserMessageParam
from servers import HealthPoller, ServerProcess, free_port
from timing import (
    StreamTiming,
    aggregate_tok_s,
    decode_tok_s,
    itls_ms,
    percentile,
    tpot_ms,
    ttfts_ms,
)
from vllm_cpu import VllmCpu

from headrace.model.gguf_file import gguf_config
from headrace.model.gguf_reader import read_gguf
from headrace.model.source import resolve_model
from headrace.text import Tokenizer

# headrace's switch for prefix caching.
NO_PREFIX_CACHING_FLAG = "--no-prefix-caching"
# The warm-up every server gets before it is measured.
_WARMUP_PROMPT_LEN = 48
_WARMUP_OUTPUT_LEN = 4
# Random words in each shared-prefix stream's own question.
_QUESTION_WORDS = 12
# Seconds a server may take to load the model and answer /health.
_READY_TIMEOUT_S = 600
# Tokens of room left in each llama-server slot beyond the longest request.
_SLOT_MARGIN = 64
# Bytes per weight the bounds assume for a --peer-types pair (16-bit weights).
_WEIGHT_BYTES = 2.0
# The --peer-types name of the file's own weights, served as stored by both servers.
STORED = "stored"
# The --peer-types name of vLLM's CPU wheel beside headrace, on a Hugging Face directory.
VLLM = "vllm"
# --avx2: headrace's kernels, torch's own, oneDNN's and MKL's (torch's float32 GEMMs) held to
# AVX2 (llama-server gets an AVX2 build). Without MKL's cap a float32 prefill ran AVX-512 GEMMs
# at 260-325 GFLOP/s on 2 Sapphire Rapids cores, against 166-188 capped.
_AVX2_ENVIRONMENT = {
    "HEADRACE_MARCH": "x86-64-v3",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}

_T0 = time.perf_counter()


@dataclass(frozen=True)
class Workloads:
    # Tokens of each prompt once the chat template is applied.
    prompt_len: int
    # Tokens generated per request, single stream and levels.
    output_len: int
    # Concurrency levels, ascending: that many requests sent at once.
    levels: tuple[int, ...]
    # Tokens of the shared system prompt, templated.
    prefix_len: int
    # Streams sharing the prefix.
    prefix_streams: int
    # Tokens generated per shared-prefix stream.
    prefix_output_len: int
    # Seconds between GET /health polls during the largest level.
    health_interval_s: float

    @property
    def slots(self) -> int:
        """The most requests in flight at once."""
        return max(*self.levels, self.prefix_streams)

    @property
    def longest_request(self) -> int:
        """The most tokens one request holds, prompt and output (a question is ~2 tokens/word)."""
        prefixed = self.prefix_len + 2 * _QUESTION_WORDS + 16 + self.prefix_output_len
        return max(self.prompt_len + self.output_len, prefixed)


@dataclass(frozen=True)
class ModelShape:
    # Parameters of the matmuls every token goes through: all but the embedding and the head.
    body_params: int
    # Parameters of the output head, run only where a token is sampled.
    head_params: int
    layers: int
    # Query heads x head width: the width attention scores and mixes at.
    attention_width: int
    # Bytes per weight a decode step reads from the file as stored (body and head).
    stored_weight_bytes: float

    @classmethod
    def from_gguf(cls, path: Path) -> ModelShape:
        """The shape recorded in a GGUF file."""
        contents = read_gguf(path)
        config = gguf_config(contents)
        sizes = {tensor.name: math.prod(tensor.shape) for tensor in contents.tensors}
        stored = {tensor.name: tensor.data.nbytes for tensor in contents.tensors}
        # The embedding is a lookup; the head is a matmul of the same size, tied or not.
        embedding_and_head = sizes["token_embd.weight"] + sizes.get("output.weight", 0)
        body_params = sum(sizes.values()) - embedding_and_head
        head = "output.weight" if "output.weight" in stored else "token_embd.weight"
        body_bytes = sum(stored.values()) - stored["token_embd.weight"]
        body_bytes -= stored.get("output.weight", 0)
        head_params = config.vocab_size * config.hidden_size
        return cls(
            body_params=body_params,
            head_params=head_params,
            layers=config.num_hidden_layers,
            attention_width=config.num_attention_heads * config.head_dim,
            stored_weight_bytes=(body_bytes + stored[head]) / (body_params + head_params),
        )

    @property
    def weights_per_token(self) -> int:
        """Weights one decode step reads: the body and the head."""
        return self.body_params + self.head_params

    def gflop(self, tokens: int, sampled: int) -> float:
        """GFLOPs of running `tokens` through the model and the head on `sampled` of them.

        2 FLOPs per weight per token, and causal attention: 4·layers·width·t at position t.
        """
        matmuls = 2 * (self.body_params * tokens + self.head_params * sampled)
        attention = 2 * self.layers * self.attention_width * tokens**2
        return (matmuls + attention) / 1e9


@dataclass(frozen=True)
class Bounds:
    """The best the machine could do on this model with 16-bit weights."""

    # Single-stream decode: memory bandwidth over the bytes of weights read per token.
    decode_tok_s: float
    # Single-stream TTFT: the prompt's FLOPs at peak.
    prefill_ms: float
    # A level's output tok/s when compute bound: peak over a request's FLOPs per output token.
    compute_tok_s: float

    @classmethod
    def of(
        cls,
        shape: ModelShape,
        workloads: Workloads,
        bandwidth_gbs: float,
        peak_gflops: float,
        weight_bytes: float,
    ) -> Bounds:
        prompt, output = workloads.prompt_len, workloads.output_len
        # The last output token is never fed back; every output token was sampled.
        request_gflop = shape.gflop(prompt + output - 1, sampled=output)
        return cls(
            decode_tok_s=bandwidth_gbs * 1e9 / (weight_bytes * shape.weights_per_token),
            prefill_ms=1000 * shape.gflop(prompt, sampled=1) / peak_gflops,
            compute_tok_s=peak_gflops * output / request_gflop,
        )

    def level_tok_s(self, concurrency: int) -> float:
        """A level's roofline: one weight read per step for all streams, or the FLOPs."""
        return min(concurrency * self.decode_tok_s, self.compute_tok_s)


@dataclass
class Measured:
    """One server's streams in every workload."""

    single: StreamTiming | None = None
    levels: dict[int, list[StreamTiming]] = field(default_factory=dict)
    # GET /health round trips during the largest level, ms.
    health_ms: list[float] = field(default_factory=list)
    # The request that put the shared prefix in the cache.
    prefix_cold: StreamTiming | None = None
    # The streams that found it there.
    prefix: list[StreamTiming] = field(default_factory=list)
    # The same streams with prefix caching switched off (headrace only).
    prefix_uncached: list[StreamTiming] = field(default_factory=list)
    # The share of the machine's CPU other processes took while this server was measured.
    foreign_cpu: float = 0.0

    def plain_streams(self) -> list[StreamTiming]:
        """The streams of the single-stream and concurrency workloads."""
        single = [self.single] if self.single else []
        return single + [s for streams in self.levels.values() for s in streams]

    def prefix_streams(self) -> list[StreamTiming]:
        """The streams of the shared-prefix workload."""
        cold = [self.prefix_cold] if self.prefix_cold else []
        return [*cold, *self.prefix, *self.prefix_uncached]


@dataclass(frozen=True)
class Metric:
    workload: str
    name: str
    # True for rates, False for latencies (which way the ratio and the bound point).
    higher_is_better: bool
    # The machine's best for this metric, where one is meaningful.
    bound: float | None
    # The metric of one server's measurements; None where that server has none.
    value: Callable[[Measured], float | None]


class Prompts:
    """Chats never sent before: a unique nonce first, then seeded random words, fit to a length.

    Lengths count the tokens of the chat once headrace's tokenizer applies the chat template.
    """

    def __init__(self, tokenizer: Tokenizer, seed: int) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self._rng = random.Random(seed)
        self._nonces = itertools.count()

    def user(self, tokens: int) -> Chat:
        """One user message, `tokens` long in all."""
        nonce = self._nonce()
        return self._fit(lambda words: [{"role": "user", "content": f"{nonce} {words}"}], tokens)

    def system(self, tokens: int) -> Chat:
        """One system message, `tokens` long once templated on its own."""
        nonce = self._nonce()
        return self._fit(lambda words: [{"role": "system", "content": f"{nonce} {words}"}], tokens)

    def question(self) -> ChatCompletionUserMessageParam:
        """A short user message of its own."""
        words = random_words(self._rng, _QUESTION_WORDS)
        return {"role": "user", "content": f"{self._nonce()} {words}?"}

    def length(self, chat: Chat) -> int:
        """Tokens of `chat` with the chat template applied."""
        return len(self.tokenizer.apply_chat_template(chat))

    def _nonce(self) -> str:
        return f"Request {self.seed}-{next(self._nonces)}:"

    def _fit(self, make: Callable[[str], Chat], tokens: int) -> Chat:
        # Nearly one token per word: a few corrections of the word count land on `tokens`.
        words = random_words(self._rng, 2 * tokens).split()
        count = max(1, tokens - self.length(make("")))
        chat = make(" ".join(words[:count]))
        for _ in range(4):
            missing = tokens - self.length(chat)
            if missing == 0:
                break
            count = min(len(words), max(1, count + missing))
            chat = make(" ".join(words[:count]))
        return chat


@dataclass(frozen=True)
class Side:
    """One server as the table's column: how to start it and what to send it."""

    name: str
    argv: Callable[[int], list[str]]
    # Request fields for this server beyond the OpenAI API's.
    extra_body: dict[str, object] = field(default_factory=dict)
    # Variables set for the server, over this process's environment.
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """headrace and a peer server on weights of one precision: one table."""

    # What the weights are, for the table's heading.
    title: str
    headrace: Side
    peer: Side
    # Bytes per weight a decode step reads, for the bounds.
    weight_bytes: float


class Peers:
    """The peers' programs, each found, built or installed when a pair first needs it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args

    @functools.cached_property
    def llama(self) -> LlamaCpp:
        isa = "avx2" if self._args.avx2 else "native"
        return LlamaCpp.find_or_build(self._args.llama_server, _log, isa)

    @functools.cached_property
    def vllm(self) -> VllmCpu:
        return VllmCpu.find_or_install(_log)

    def versions(self) -> str:
        """The versions of the peers used, for the report."""
        versions = []
        if "llama" in self.__dict__:
            versions.append(f"llama.cpp {self.llama.version()}")
        if "vllm" in self.__dict__:
            versions.append(f"vLLM {self.vllm.version()} ({self.vllm.venv})")
        return "; ".join(versions)


def main() -> None:
    args = _parse_args()
    workloads = _workloads(args)
    model = Path(args.model) if args.model else resolve_model(None).path
    shape = ModelShape.from_gguf(model)
    prompts = Prompts(Tokenizer.from_path(model), args.seed)
    if args.avx2:
        os.environ.update(_AVX2_ENVIRONMENT)  # headrace's servers inherit it
    peers = Peers(args)
    pairs = [_pair(args, peers, model, shape, workloads, peer) for peer in args.peer_types]
    measured = {}
    for pair in pairs:
        for side in (pair.headrace, pair.peer):
            measured[side.name] = _measure(side, workloads, prompts)
    first = pairs[0].headrace
    measured[first.name].prefix_uncached = _measure_uncached(first, workloads, prompts)
    print(_report(args, model, shape, peers, pairs, workloads, measured))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=".gguf file (default: the default model)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--llama-server", type=Path, help="llama-server (default: built in cache)")
    parser.add_argument(
        "--peer-types",
        nargs="+",
        default=["F16", STORED],
        help="weights of each pair: a llama-quantize type for llama-server beside headrace in "
        f"--dtype, {STORED!r}: the file's own, on both, or {VLLM!r}: vLLM's CPU wheel beside "
        f"headrace, both in --dtype on a bfloat16 directory (default: F16 {STORED})",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes")
    parser.add_argument(
        "--avx2",
        action="store_true",
        help="both servers held to AVX2 + FMA, as on a CPU without AVX-512 (llama-server is "
        "built apart for it)",
    )
    parser.add_argument("--prompt-len", type=int, help="prompt tokens (default 256)")
    parser.add_argument("--output-len", type=int, help="tokens generated (default 128)")
    parser.add_argument("--levels", type=int, nargs="+", help="concurrency (default 1 4 16 32)")
    parser.add_argument("--prefix-len", type=int, help="shared system prompt tokens (default 1000)")
    parser.add_argument("--prefix-streams", type=int, help="streams sharing it (default 8)")
    parser.add_argument("--prefix-output-len", type=int, help="their tokens out (default 64)")
    parser.add_argument("--health-interval-ms", type=float, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama-server -t")
    parser.add_argument("--slot-context", type=int, help="llama-server context per slot")
    parser.add_argument("--headrace-args", default="", help="more `headrace serve` flags")
    parser.add_argument("--llama-args", default="", help="more llama-server flags")
    parser.add_argument("--vllm-args", default="", help="more `vllm serve` flags")
    parser.add_argument("--bandwidth-gbs", type=float, default=25.0, help="memory bandwidth")
    parser.add_argument("--peak-gflops", type=float, default=210.0, help="peak bf16 GFLOP/s")
    parser.add_argument(
        "--seed", type=int, default=time.time_ns() % 1_000_000, help="prompts' words and nonces"
    )
    args = parser.parse_args()
    if args.avx2 and VLLM in args.peer_types:
        parser.error("--avx2: vLLM's wheel picks its kernels by the CPU's own instruction sets")
    return args


def _workloads(args: argparse.Namespace) -> Workloads:
    quick = args.quick
    return Workloads(
        prompt_len=args.prompt_len or (64 if quick else 256),
        output_len=args.output_len or (8 if quick else 128),
        levels=tuple(sorted(args.levels or ((1, 4) if quick else (1, 4, 16, 32)))),
        prefix_len=args.prefix_len or (128 if quick else 1000),
        prefix_streams=args.prefix_streams or (4 if quick else 8),
        prefix_output_len=args.prefix_output_len or (8 if quick else 64),
        health_interval_s=args.health_interval_ms / 1000,
    )


def _pair(
    args: argparse.Namespace,
    peers: Peers,
    model: Path,
    shape: ModelShape,
    workloads: Workloads,
    peer_type: str,
) -> Pair:
    if peer_type == STORED:
        quant = _file_type(model)
        headrace = _headrace_side(args, model, workloads, f"headrace {quant}")
        title = f"the file's own weights ({quant}, {shape.stored_weight_bytes:.2f} bytes/weight)"
        llama_side = _llama_side(args, peers.llama, model, workloads, quant)
        return Pair(title, headrace, llama_side, shape.stored_weight_bytes)
    if peer_type == VLLM:
        weights = peers.vllm.weights(model, _log)
        # The directory's name beside headrace's: the two tables of a run stay apart.
        headrace = _headrace_side(args, weights, workloads, f"headrace {args.dtype} (HF)")
        vllm_side = _vllm_side(args, peers.vllm, weights, workloads)
        title = f"bfloat16 weights in a Hugging Face directory ({args.dtype} activations on both)"
        return Pair(title, headrace, vllm_side, _WEIGHT_BYTES)
    weights = peers.llama.weights(model, peer_type, _log)
    headrace = _headrace_side(args, weights, workloads, f"headrace {args.dtype}")
    llama_side = _llama_side(args, peers.llama, weights, workloads, peer_type)
    title = f"{peer_type} weights (headrace with {args.dtype} activations)"
    return Pair(title, headrace, llama_side, _WEIGHT_BYTES)


def _file_type(model: Path) -> str:
    # The quantization most of the file's matrices use, by name (Q4_1 for the default model).
    kinds = [t.tensor_type.name for t in read_gguf(model).tensors if len(t.shape) == 2]
    return max(set(kinds), key=kinds.count)


def _headrace_side(args: argparse.Namespace, model: Path, workloads: Workloads, name: str) -> Side:
    def argv(port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "headrace", "serve", "--model", str(model)),
            *("--dtype", args.dtype, "--max-num-seqs", str(workloads.slots)),
            *("--quantization", "auto", "--host", "127.0.0.1", "--port", str(port)),
            *shlex.split(args.headrace_args),
        ]

    return Side(name, argv)


def _llama_side(
    args: argparse.Namespace, llama: LlamaCpp, weights: Path, workloads: Workloads, type_name: str
) -> Side:
    slot_context = args.slot_context or _round_up(workloads.longest_request + _SLOT_MARGIN, 256)

    def argv(port: int) -> list[str]:
        return [
            *(str(llama.server), "-m", str(weights), "--host", "127.0.0.1", "--port", str(port)),
            *("-t", str(args.threads), "-ngl", "0", "--no-webui"),
            # Continuous batching is on by default; each slot gets its own slot_context.
            *("--parallel", str(workloads.slots), "-c", str(workloads.slots * slot_context)),
            *shlex.split(args.llama_args),
        ]

    # cache_prompt is llama-server's default, spelled out: reuse a slot's cached prefix.
    return Side(f"llama-server {type_name}", argv, {"cache_prompt": True})


def _vllm_side(
    args: argparse.Namespace, vllm: VllmCpu, weights: Path, workloads: Workloads
) -> Side:
    def argv(port: int) -> list[str]:
        flags = vllm.serve_argv(weights, port, args.dtype, workloads.slots)
        return [*flags, *shlex.split(args.vllm_args)]

    return Side("vLLM", argv, settings=vllm.settings())


def _measure(side: Side, workloads: Workloads, prompts: Prompts) -> Measured:
    measured = Measured()
    with _started(side) as server, ForeignCpu(own_pids=[server.pid]) as cpu:
        client = _warmed_up_client(side, server.url, workloads, prompts)
        measured.single = _single_stream(side, client, workloads, prompts)
        for n in workloads.levels[:-1]:
            measured.levels[n] = _level(side, client, workloads, prompts, n)
        top = workloads.levels[-1]
        with HealthPoller(server.url, workloads.health_interval_s) as health:
            measured.levels[top] = _level(side, client, workloads, prompts, top)
        measured.health_ms = health.latencies_ms
        _log(f"{side.name}: /health p50 {percentile(health.latencies_ms, 50):.1f} ms")
        measured.prefix_cold, measured.prefix = _shared_prefix(side, client, workloads, prompts)
    measured.foreign_cpu = cpu.share
    return measured


def _measure_uncached(base: Side, workloads: Workloads, prompts: Prompts) -> list[StreamTiming]:
    """The shared-prefix streams on headrace with prefix caching off."""
    side = Side(
        f"headrace {NO_PREFIX_CACHING_FLAG}", lambda p: [*base.argv(p), NO_PREFIX_CACHING_FLAG]
    )
    with _started(side) as server:
        client = _warmed_up_client(side, server.url, workloads, prompts)
        return _shared_prefix(side, client, workloads, prompts)[1]


def _started(side: Side) -> ServerProcess:
    port = free_port()
    log_path = peers_dir() / "logs" / f"{side.name.replace(' ', '_')}.log"
    _log(f"starting {side.name} on port {port} (log: {log_path})")
    env = {**os.environ, **side.settings}
    return ServerProcess(side.name, side.argv(port), port, log_path, _READY_TIMEOUT_S, env)


def _warmed_up_client(side: Side, url: str, workloads: Workloads, prompts: Prompts) -> HttpRunner:
    client = HttpRunner(url, None, side.extra_body)
    _log(f"{side.name}: warming up")
    client.run_chats([prompts.user(_WARMUP_PROMPT_LEN)], _WARMUP_OUTPUT_LEN)
    batch = [prompts.user(_WARMUP_PROMPT_LEN) for _ in range(workloads.slots)]
    client.run_chats(batch, _WARMUP_OUTPUT_LEN)
    return client


def _single_stream(
    side: Side, client: HttpRunner, workloads: Workloads, prompts: Prompts
) -> StreamTiming:
    stream = client.run_chats([prompts.user(workloads.prompt_len)], workloads.output_len)[0]
    _log(
        f"{side.name}: 1 stream: decode {decode_tok_s(stream):.1f} tok/s, "
        f"TTFT {ttfts_ms([stream])[0]:.0f} ms"
    )
    return stream


def _level(
    side: Side, client: HttpRunner, workloads: Workloads, prompts: Prompts, n: int
) -> list[StreamTiming]:
    batch = [prompts.user(workloads.prompt_len) for _ in range(n)]
    streams = client.run_chats(batch, workloads.output_len)
    _log(
        f"{side.name}: {n} streams: {aggregate_tok_s(streams):.1f} output tok/s, "
        f"TTFT p50 {percentile(ttfts_ms(streams), 50):.0f} ms"
    )
    return streams


def _shared_prefix(
    side: Side, client: HttpRunner, workloads: Workloads, prompts: Prompts
) -> tuple[StreamTiming, list[StreamTiming]]:
    # -> the request that put the fresh prefix in the cache, and the streams that share it
    system = prompts.system(workloads.prefix_len)
    max_tokens = workloads.prefix_output_len
    cold = client.run_chats([[*system, prompts.question()]], max_tokens)[0]
    chats = [[*system, prompts.question()] for _ in range(workloads.prefix_streams)]
    streams = client.run_chats(chats, max_tokens)
    _log(
        f"{side.name}: shared prefix: TTFT {ttfts_ms([cold])[0]:.0f} ms cold, "
        f"p50 {percentile(ttfts_ms(streams), 50):.0f} ms cached"
    )
    return cold, streams


def _metrics(workloads: Workloads, bounds: Bounds) -> list[Metric]:
    w = workloads
    single = f"1 stream, {w.prompt_len} → {w.output_len} tokens"
    metrics = [
        _rate(single, "decode tok/s (1/TPOT)", _of_single(decode_tok_s), bounds.decode_tok_s),
        _latency(single, "TTFT ms", _of_single(lambda s: ttfts_ms([s])[0]), bounds.prefill_ms),
    ]
    for n in w.levels:
        metrics += _level_metrics(w, bounds, n)
    prefix = f"{w.prefix_len}-token shared prefix, {w.prefix_streams} streams → "
    prefix += f"{w.prefix_output_len} tokens"
    uncached = f"TTFT p50 ms, headrace {NO_PREFIX_CACHING_FLAG}"
    return [
        *metrics,
        _latency(prefix, "TTFT ms, first request (fills the cache)", _p(_cold_ttft, 50)),
        _latency(prefix, "TTFT p50 ms, prefix cached", _p(lambda m: ttfts_ms(m.prefix), 50)),
        _latency(prefix, uncached, _p(lambda m: ttfts_ms(m.prefix_uncached), 50)),
    ]


def _level_metrics(w: Workloads, bounds: Bounds, n: int) -> list[Metric]:
    level = f"{n} concurrent, {w.prompt_len} → {w.output_len} tokens"

    def ttfts(m: Measured) -> list[float]:
        return ttfts_ms(m.levels[n])

    def itls(m: Measured) -> list[float]:
        return itls_ms(m.levels[n])

    def tpots(m: Measured) -> list[float]:
        return [tpot_ms(s) for s in m.levels[n]]

    metrics = [
        _rate(level, "output tok/s", lambda m: aggregate_tok_s(m.levels[n]), bounds.level_tok_s(n)),
        _latency(level, "TTFT p50 ms", _p(ttfts, 50)),
        _latency(level, "TTFT p99 ms", _p(ttfts, 99)),
        _latency(level, "ITL p50 ms", _p(itls, 50)),
        _latency(level, "ITL p99 ms", _p(itls, 99)),
        _latency(level, "TPOT p50 ms", _p(tpots, 50)),
    ]
    if n == w.levels[-1]:
        metrics += [
            _latency(level, "/health p50 ms (polled)", _p(lambda m: m.health_ms, 50)),
            _latency(level, "/health max ms (polled)", _p(lambda m: m.health_ms, 100)),
        ]
    return metrics


def _rate(
    workload: str, name: str, value: Callable[[Measured], float | None], bound: float
) -> Metric:
    return Metric(workload, name, higher_is_better=True, bound=bound, value=value)


def _latency(
    workload: str, name: str, value: Callable[[Measured], float | None], bound: float | None = None
) -> Metric:
    return Metric(workload, name, higher_is_better=False, bound=bound, value=value)


def _p(values: Callable[[Measured], list[float]], q: float) -> Callable[[Measured], float | None]:
    # The q-th percentile of the values; None where a server has none.
    def value(m: Measured) -> float | None:
        measured = values(m)
        return percentile(measured, q) if measured else None

    return value


def _of_single(metric: Callable[[StreamTiming], float]) -> Callable[[Measured], float | None]:
    return lambda m: metric(m.single) if m.single else None


def _cold_ttft(m: Measured) -> list[float]:
    return ttfts_ms([m.prefix_cold]) if m.prefix_cold else []


def _report(
    args: argparse.Namespace,
    model: Path,
    shape: ModelShape,
    peers: Peers,
    pairs: list[Pair],
    workloads: Workloads,
    measured: dict[str, Measured],
) -> str:
    w = workloads
    command = shlex.join(["python", "benchmarks/bench_compare.py", *sys.argv[1:]])
    sides = [side for pair in pairs for side in (pair.headrace, pair.peer)]
    lines = [
        f"Command: `{command}`",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores"
        f"{' held to AVX2 (' + _avx2_note() + ')' if args.avx2 else ''}; "
        f"Python {platform.python_version()}, "
        f"torch {torch.__version__}, headrace {_headrace_commit()}; {peers.versions()}",
        f"Model: {model.name}; one table per pair of servers on weights of one precision.",
        *(f"{side.name}: `{_command(side)}` (port 0: a free port)" for side in sides),
        f"Workloads: prompts of {w.prompt_len} tokens after the chat template, fresh for every "
        f"request (seed {args.seed}), {w.output_len} tokens out (temperature 0, ignore_eos); "
        f"levels {', '.join(map(str, w.levels))} send that many requests at once; /health is "
        f"polled every {1000 * w.health_interval_s:.0f} ms during the {w.levels[-1]}-stream "
        f"level. Shared prefix: one request caches a fresh {w.prefix_len}-token system prompt, "
        f"then {w.prefix_streams} streams with their own {_QUESTION_WORDS}-word questions.",
        f"Bounds (column 'bound', and each figure's share of it in parentheses): decode "
        f"{args.bandwidth_gbs:g} GB/s over the pair's bytes per weight x "
        f"{shape.weights_per_token / 1e6:.1f}M weights read per token; TTFT the prompt's FLOPs "
        f"at {args.peak_gflops:g} GFLOP/s; a level's output tok/s the lesser of n x the decode "
        "bound and peak FLOP/s over a request's FLOPs (prompt and output: 2 per weight per token, "
        "the output head only where a token is sampled, plus attention) per output token.",
    ]
    for pair in pairs:
        bounds = Bounds.of(shape, w, args.bandwidth_gbs, args.peak_gflops, pair.weight_bytes)
        names = [pair.headrace.name, pair.peer.name]
        lines += [
            "",
            f"**{pair.title}**",
            "",
            f"| workload | metric | bound | {' | '.join(names)} | ratio (>1: headrace better) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        metrics = _metrics(w, bounds)
        lines += [_table_row(metric, [measured[name] for name in names]) for metric in metrics]
    lines += ["", *_stream_notes(measured)]
    return "\n".join(lines)


def _command(side: Side) -> str:
    # The side's command line, after the variables set for it.
    return shlex.join([*(f"{k}={v}" for k, v in side.settings.items()), *side.argv(0)])


def _table_row(metric: Metric, measured: list[Measured]) -> str:
    values = [metric.value(m) for m in measured]
    bound = "—" if metric.bound is None else f"{metric.bound:.1f}"
    cells = [_cell(value, metric) for value in values]
    ours, theirs = values[0], values[1]
    if not ours or not theirs:
        ratio = "—"
    else:
        ratio = f"{ours / theirs if metric.higher_is_better else theirs / ours:.2f}x"
    return f"| {metric.workload} | {metric.name} | {bound} | {' | '.join(cells)} | {ratio} |"


def _cell(value: float | None, metric: Metric) -> str:
    if value is None:
        return "—"
    if metric.bound is None:
        return f"{value:.1f}"
    share = value / metric.bound if metric.higher_is_better else metric.bound / value
    return f"{value:.1f} ({share:.0%})"


def _stream_notes(measured: dict[str, Measured]) -> list[str]:
    # What each server counted: the prompt lengths fit with headrace's tokenizer, the outputs.
    notes = []
    for name, m in measured.items():
        outputs = _span(s.num_tokens for s in m.plain_streams() + m.prefix_streams())
        notes.append(
            f"{name}: prompts of {_span(s.num_prompt_tokens for s in m.plain_streams())} tokens "
            f"(shared prefix: {_span(s.num_prompt_tokens for s in m.prefix_streams())}) by its "
            f"own count, {outputs} tokens out; other processes took {m.foreign_cpu:.0%} of the "
            "machine's CPU while it was measured."
        )
    return notes


def _span(values: Iterable[int]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]}" if ordered[0] == ordered[-1] else f"{ordered[0]}-{ordered[-1]}"


def _headrace_commit() -> str:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", "-C", str(repo), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown commit"


def _avx2_note() -> str:
    return " ".join(f"{name}={value}" for name, value in _AVX2_ENVIRONMENT.items())


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def _log(message: str) -> None:
    print(f"[compare {time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
