"""headrace's matmul kernels against the CPU libraries that could serve the same weights.

    python benchmarks/bench_kernels.py [--tokens 1 8] [--rounds 15] [--passes 3]

One pass multiplies float32 activations of --tokens rows by all 30 layers' projections of
SmolLM2-135M (q/k/v fused 960 x 576, o 576 x 576, gate/up fused 3072 x 576, down 576 x 1536),
each layer's weights its own, as a decode step reads them: from memory, not cache. Weights are
random normal; speed does not depend on their values. Each library gets them through its own
public API; one it cannot load (not installed, or failing) is reported and skipped:

- headrace: Q4_1 and Q8_0 as gguf-py quantizes them (repacked), F16 (16-bit, kept as stored);
- torch: float32 and bfloat16 `nn.Linear` (oneDNN);
- torchao (`pip install torchao`): int4 weight-only, group 32 (its CPU packing, torch's
  `_weight_int4pack_mm_for_cpu`), int8 dynamic activations x int4 weights, group 32 (its own
  `da8w4_linear_cpu`), and int8 weight-only;
- bitsandbytes (`pip install bitsandbytes`): NF4, 4-bit with a scale per 64.

Cases run interleaved, --passes passes each per round, and each figure is the median pass over
--rounds rounds, so a noisy machine slows them all alike. Prints one markdown table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from gguf import GGMLQuantizationType
from gguf.quants import quantize
from machine import cpu_model
from torch import Tensor, nn

from headrace.model.gguf_quants import repack
from headrace.model.quantized import QuantizedLinear, QuantizedTensor, quantize_q8_0

_LAYERS = 30
# (out, in) features of one layer's projections, fused as headrace fuses them.
_SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]

Layer = list[nn.Module]
Build = Callable[[list[Tensor]], Layer]


def _headrace(format_weight: Callable[[Tensor], QuantizedTensor]) -> Build:
    def build(weights: list[Tensor]) -> Layer:
        return [QuantizedLinear([format_weight(w)], None) for w in weights]

    return build


def _q4_1(weight: Tensor) -> QuantizedTensor:
    kind = GGMLQuantizationType.Q4_1
    return repack(quantize(weight.numpy(), kind), kind, weight.shape[0])


def _torch(dtype: torch.dtype) -> Build:
    def build(weights: list[Tensor]) -> Layer:
        layers: Layer = []
        for weight in weights:
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=dtype)
            linear.weight.data.copy_(weight)
            layers.append(linear)
        return layers

    return build


def _torchao(name: str) -> Build:
    def build(weights: list[Tensor]) -> Layer:
        from torchao.prototype.quantization import int4
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        configs = {
            "int4": lambda: int4.PrototypeInt4WeightOnlyConfig(group_size=32),
            "int8-int4": lambda: int4.Int8DynamicActivationInt4WeightConfig(group_size=32),
            "int8": Int8WeightOnlyConfig,
        }
        config = configs[name]()
        layers = _torch(torch.float32)(weights)
        for linear in layers:
            quantize_(linear, config)
        return layers

    return build


class _BitsAndBytesNF4(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        import bitsandbytes.functional as bnb_functional

        self.weight, self.state = bnb_functional.quantize_4bit(weight, quant_type="nf4")

    def forward(self, x: Tensor) -> Tensor:
        import bitsandbytes

        out: Tensor = bitsandbytes.matmul_4bit(x, self.weight.t(), quant_state=self.state)
        return out


def _bitsandbytes(weights: list[Tensor]) -> Layer:
    return [_BitsAndBytesNF4(weight) for weight in weights]


_CASES: dict[str, Build] = {
    "headrace Q4_1": _headrace(_q4_1),
    "headrace Q8_0": _headrace(quantize_q8_0),
    "headrace F16 (16-bit)": _headrace(lambda w: QuantizedTensor.half(w.half())),
    "torch float32 (oneDNN)": _torch(torch.float32),
    "torch bfloat16 (oneDNN)": _torch(torch.bfloat16),
    "torchao int4 weight-only, group 32": _torchao("int4"),
    "torchao int8 activations x int4 weights, group 32": _torchao("int8-int4"),
    "torchao int8 weight-only": _torchao("int8"),
    "bitsandbytes NF4": _bitsandbytes,
}


class Case:
    def __init__(self, name: str, build: Build, weights: list[list[Tensor]]) -> None:
        self.name = name
        self.layers = [build(layer) for layer in weights]
        self.seconds: dict[int, list[float]] = {}

    @torch.inference_mode()
    def run(self, tokens: int, passes: int) -> None:
        dtype = torch.bfloat16 if "bfloat16" in self.name else torch.float32
        inputs = {k: torch.randn(tokens, k, dtype=dtype) for _, k in _SHAPES}
        for _ in range(passes):
            started = time.perf_counter()
            for layer in self.layers:
                for (_, k), linear in zip(_SHAPES, layer, strict=True):
                    linear(inputs[k])
            self.seconds.setdefault(tokens, []).append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    weights = [
        [torch.randn(n, k, generator=generator) * 0.02 for n, k in _SHAPES] for _ in range(_LAYERS)
    ]
    cases: list[Case] = []
    for name, build in _CASES.items():
        try:
            case = Case(name, build, copy.deepcopy(weights))
            for tokens in args.tokens:  # warm-up: first-call allocations, kernel selection
                case.run(tokens, 1)
            case.seconds.clear()
            cases.append(case)
        except Exception as error:  # a library that is missing or cannot run here
            print(f"- {name}: skipped ({type(error).__name__}: {error})")
    for _ in range(args.rounds):
        for case in cases:
            for tokens in args.tokens:
                case.run(tokens, args.passes)

    print(f"\n{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = " | ".join(f"{t} token{'s' * (t > 1)}: ms a pass" for t in args.tokens)
    print(f"\n| kernels | {header} |\n|---|{'---:|' * len(args.tokens)}")
    for case in cases:
        figures = " | ".join(
            f"{1000 * statistics.median(case.seconds[t]):.2f}" for t in args.tokens
        )
        print(f"| {case.name} | {figures} |")


if __name__ == "__main__":
    main()
