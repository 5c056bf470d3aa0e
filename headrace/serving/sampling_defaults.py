"""Sampling defaults from the model's generation config, as vLLM's `--generation-config`.

"auto" reads the generation_config.json of a Hugging Face model directory, or takes the settings
the model's card recommends where the source carries them (the default model); "none" sets
nothing; anything else is a path to a generation_config.json or the directory holding one. Only
the keys vLLM reads are taken; the rest of the file is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from headrace.model.source import ModelSource

__all__ = ["SamplingDefaults", "load_sampling_defaults"]

# The file beside a model's weights that holds them.
_FILE_NAME = "generation_config.json"
# generation_config.json keys that set a default -> the SamplingDefaults field each sets.
_KEYS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "max_new_tokens": "max_tokens",
}


@dataclass(frozen=True, config=ConfigDict(strict=True))
class SamplingDefaults:
    """What a request gets for each sampling parameter it leaves out; None: the usual default.

    The ranges are those a request may ask for.
    """

    # Softmax temperature; 0 is greedy.
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Nucleus sampling: the smallest set of tokens whose probability reaches top_p.
    top_p: float | None = Field(default=None, gt=0, le=1)
    # Only the top_k most likely tokens; 0 or -1: all.
    top_k: int | None = Field(default=None, ge=-1)
    # Only tokens at least min_p times as likely as the likeliest.
    min_p: float | None = Field(default=None, ge=0, le=1)
    # Divides positive logits of tokens already seen (multiplies negative ones); 1 is none.
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    # Subtracted once from the logit of every token already generated.
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Subtracted from a token's logit once for every time it was generated.
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # Most tokens to generate (max_new_tokens in the file).
    max_tokens: int | None = Field(default=None, ge=1)

    def describe(self) -> str:
        """The defaults set, for the start log: "temperature 0.2, top_p 0.9", or "none"."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return ", ".join(f"{name} {value}" for name, value in values if value is not None) or "none"


def load_sampling_defaults(setting: str, source: ModelSource) -> SamplingDefaults:
    """The defaults `--generation-config` asks for: "auto", "none" or a PATH; ValueError if bad."""
    if setting == "none":
        return SamplingDefaults()
    if setting == "auto":
        if source.generation_config is not None:
            return _parse(source.generation_config, f"the settings {source.name}'s card recommends")
        if source.format == "hf" and (source.path / _FILE_NAME).is_file():
            return _parse(_read(source.path / _FILE_NAME), str(source.path / _FILE_NAME))
        return SamplingDefaults()
    path = Path(setting).expanduser()
    if path.is_dir():
        path = path / _FILE_NAME
    return _parse(_read(path), str(path))


def _read(path: Path) -> Mapping[str, object]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"there is no generation config at {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the generation config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the generation config {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the generation config {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"the generation config {path} is not a JSON object")
    return config


def _parse(config: Mapping[str, object], where: str) -> SamplingDefaults:
    values: dict[str, Any] = {field: config[key] for key, field in _KEYS.items() if key in config}
    try:
        return SamplingDefaults(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = next(key for key, field in _KEYS.items() if field == error["loc"][0])
        raise ValueError(f"{key} {config[key]!r} in {where}: {error['msg']}") from None
