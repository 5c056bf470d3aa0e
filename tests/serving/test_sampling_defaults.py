"""--generation-config: sampling defaults from the model's generation config, a file, or none."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from headrace.model.source import ModelSource, resolve_model
from headrace.serving import sampling_defaults
from headrace.serving.sampling_defaults import SamplingDefaults, load_sampling_defaults

# A generation_config.json as transformers writes it: keys headrace reads, and others.
LLAMA_LIKE = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128009],
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.45.0",
}


def make_hf_model(path: Path, generation_config: object | None = None) -> ModelSource:
    """A model directory with config.json and, if given, a generation_config.json."""
    path.mkdir()
    (path / "config.json").write_text("{}")
    if generation_config is not None:
        (path / "generation_config.json").write_text(json.dumps(generation_config))
    return ModelSource(path, "hf", path.name)


def make_gguf_model(path: Path) -> ModelSource:
    path.write_bytes(b"GGUF")
    return ModelSource(path, "gguf", path.stem)


def test_auto_reads_the_model_directorys_generation_config(tmp_path: Path) -> None:
    source = make_hf_model(tmp_path / "model", LLAMA_LIKE)
    defaults = load_sampling_defaults("auto", source)
    assert defaults == SamplingDefaults(temperature=0.6, top_p=0.9)
    assert defaults.describe() == "temperature 0.6, top_p 0.9"


def test_every_key_headrace_knows(tmp_path: Path) -> None:
    config = {
        "temperature": 0,
        "top_p": 1,
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.05,
        "presence_penalty": -0.5,
        "frequency_penalty": 2,
        "max_new_tokens": 512,
    }
    defaults = load_sampling_defaults("auto", make_hf_model(tmp_path / "model", config))
    assert defaults == SamplingDefaults(
        temperature=0.0,
        top_p=1.0,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.05,
        presence_penalty=-0.5,
        frequency_penalty=2.0,
        max_tokens=512,
    )
    assert defaults.describe().endswith("frequency_penalty 2.0, max_tokens 512")


def test_auto_without_a_generation_config_sets_nothing(tmp_path: Path) -> None:
    assert load_sampling_defaults("auto", make_hf_model(tmp_path / "model")) == SamplingDefaults()
    assert load_sampling_defaults("auto", make_gguf_model(tmp_path / "other.gguf")) == (
        SamplingDefaults()
    )
    assert SamplingDefaults().describe() == "none"


def test_auto_on_the_default_model_takes_its_cards_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")  # cached: no download
    monkeypatch.setenv("HEADRACE_CACHE_DIR", str(cache))
    monkeypatch.setattr(subprocess, "run", _no_network)
    defaults = load_sampling_defaults("auto", resolve_model(None))
    assert defaults == SamplingDefaults(temperature=0.2, top_p=0.9)


def test_none_sets_nothing(tmp_path: Path) -> None:
    source = make_hf_model(tmp_path / "model", LLAMA_LIKE)
    assert load_sampling_defaults("none", source) == SamplingDefaults()
    default_model = ModelSource(tmp_path / "m.gguf", "gguf", "m", {"temperature": 0.2})
    assert load_sampling_defaults("none", default_model) == SamplingDefaults()


def test_a_path_to_the_file_or_its_directory(tmp_path: Path) -> None:
    model = make_gguf_model(tmp_path / "model.gguf")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "generation_config.json").write_text(json.dumps({"top_k": 40}))
    named = tmp_path / "mine.json"
    named.write_text(json.dumps({"max_new_tokens": 64}))
    assert load_sampling_defaults(str(elsewhere), model) == SamplingDefaults(top_k=40)
    assert load_sampling_defaults(str(named), model) == SamplingDefaults(max_tokens=64)


def test_a_path_wins_over_the_models_own(tmp_path: Path) -> None:
    source = make_hf_model(tmp_path / "model", LLAMA_LIKE)
    named = tmp_path / "mine.json"
    named.write_text(json.dumps({"temperature": 1.2}))
    assert load_sampling_defaults(str(named), source) == SamplingDefaults(temperature=1.2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "there is no generation config at {path}"),
        ("{not json", "the generation config {path} is not valid JSON: "),
        ("[0.7]", "the generation config {path} is not a JSON object"),
        (b"\xff\xfe", "the generation config {path} is not UTF-8 text"),
    ],
)
def test_a_bad_file_is_a_one_line_error(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "generation_config.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_sampling_defaults(str(path), make_gguf_model(tmp_path / "m.gguf"))
    assert str(caught.value).startswith(message.format(path=path))
    assert "\n" not in str(caught.value)


def test_a_directory_without_the_file(tmp_path: Path) -> None:
    expected = f"there is no generation config at {tmp_path / 'generation_config.json'}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_sampling_defaults(str(tmp_path), make_gguf_model(tmp_path / "m.gguf"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"temperature": -0.1}, "temperature -0.1 in {path}: Input should be greater than or"),
        ({"temperature": 2.5}, "temperature 2.5 in {path}: Input should be less than or equal"),
        ({"top_p": 0}, "top_p 0 in {path}: Input should be greater than 0"),
        ({"top_p": 1.5}, "top_p 1.5 in {path}: "),
        ({"top_k": -2}, "top_k -2 in {path}: "),
        ({"top_k": 4.5}, "top_k 4.5 in {path}: Input should be a valid integer"),
        ({"min_p": 2}, "min_p 2 in {path}: "),
        ({"repetition_penalty": 0}, "repetition_penalty 0 in {path}: "),
        ({"presence_penalty": 3}, "presence_penalty 3 in {path}: "),
        ({"frequency_penalty": -3}, "frequency_penalty -3 in {path}: "),
        ({"max_new_tokens": 0}, "max_new_tokens 0 in {path}: "),
        ({"temperature": "0.7"}, "temperature '0.7' in {path}: Input should be a valid number"),
        ({"top_p": True}, "top_p True in {path}: Input should be a valid number"),
    ],
)
def test_a_value_out_of_range_names_the_key_and_the_file(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    source = make_hf_model(tmp_path / "model", {**LLAMA_LIKE, **config})
    with pytest.raises(ValueError) as caught:
        load_sampling_defaults("auto", source)
    assert str(caught.value).startswith(message.format(path=source.path / "generation_config.json"))
    assert "\n" not in str(caught.value)


def test_null_values_set_nothing(tmp_path: Path) -> None:
    source = make_hf_model(tmp_path / "model", {"temperature": None, "top_p": 0.8})
    assert load_sampling_defaults("auto", source) == SamplingDefaults(top_p=0.8)


def test_module_exports() -> None:
    assert set(sampling_defaults.__all__) == {"SamplingDefaults", "load_sampling_defaults"}


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the network must not be used")
