"""`headrace serve` refuses what it cannot serve with one clear line, never a traceback.

`headrace keys` creates, lists and revokes keys, with errors as clear. `headrace batch` runs a
batch input file to an output file, and refuses a bad one with each of its errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from headrace.api import app
from headrace.batch import MetadataStore
from headrace.cli import main
from headrace.config import EngineConfig, ModelConfig
from headrace.serving import runtime
from headrace.text import TOOL_CALL_FORMATS
from tests.batch.factories import request_line
from tests.fakes import FakeServed


@pytest.fixture(autouse=True)
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_DATA_HOME in the test's own directory: `serve` opens its data directory there, never
    in the home directory (nor in one a running server holds)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    return tmp_path / "data-home"


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "headrace", "serve", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-org/no-such-model"], "fetching it from the Hugging Face hub failed"),
        (["--model", "/no/such/model.gguf"], "neither an existing path nor a hub id"),
        (["--max-model-len", "4"], "max_model_len must be at least 16"),
        (["--served-model-name", "a", "a"], "served model names must be distinct"),
        (["--max-num-seqs", "0"], "max_num_seqs must be positive"),
        (["--block-size", "12"], "block_size must be 8, 16, 32, 64 or 128"),
        (["--quantization", "int4"], "invalid choice: 'int4'"),
        (["--kv-cache-memory", "0"], "must be a positive number of GiB, not 0"),
        (["--kv-cache-memory", "inf"], "must be a positive number of GiB, not inf"),
        (["--kv-cache-memory", "-1"], "must be a positive number of GiB, not -1"),
        (["--kv-cache-memory", "lots"], "must be a positive number of GiB, not lots"),
        (["--max-waiting", "0"], "max_waiting must be positive, not 0"),
        (["--max-body-bytes", "100"], "max_body_bytes must be at least 1024, not 100"),
        (["--drain-timeout", "-1"], "drain_timeout must be 0 or more seconds, not -1.0"),
        (["--max-file-size", "0"], "must be a positive number of MiB, not 0"),
        (["--max-file-size", "big"], "must be a positive number of MiB, not big"),
        (["--generation-config", ""], "generation_config must be auto, none or a path"),
        (["--allowed-origins", "app.example.com"], "scheme://host[:port]"),
        (["--chat-template", "/no/such.jinja"], "is neither a file nor a Jinja template"),
        (["--ssl-keyfile", "/no/key.pem"], "HTTPS needs both ssl_keyfile and ssl_certfile"),
        (["--ssl-keyfile", "/no/k.pem", "--ssl-certfile", "/no/c.pem"], "no such file: /no/k.pem"),
        (["--chat-template", ""], "chat_template must be a Jinja template or a path"),
        (["--chat-template", "{{ raise_exception('no') }}"], "does not render a one-message"),
        (["--allowed-origins", "https://app.example.com/"], "no path"),
    ],
)
def test_bad_configuration_is_one_line(args: list[str], message: str) -> None:
    done = serve(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith(("headrace: error: ", "headrace serve: error: "))
    assert message in done.stderr


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    done = serve("--model", str(weights))
    assert done.returncode == 2 and "is not a .gguf file" in done.stderr


def test_max_model_len_beyond_the_model(default_model_path: Path) -> None:
    done = serve("--model", str(default_model_path), "--max-model-len", "100000")
    assert done.returncode == 2 and "exceeds the model's context length 8192" in done.stderr


def test_a_kv_cache_too_small_for_one_context(default_model_path: Path) -> None:
    done = serve("--model", str(default_model_path), "--kv-cache-memory", "0.01")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "give --kv-cache-memory more or lower --max-model-len" in done.stderr


def test_a_missing_generation_config(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    missing = tmp_path / "missing.json"
    done = serve("--model", str(weights), "--generation-config", str(missing))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line == f"headrace: error: there is no generation config at {missing}"


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        ([], "auto"),
        (["--generation-config", "none"], "none"),
        (["--generation-config", "~/gen/generation_config.json"], "~/gen/generation_config.json"),
    ],
)
def test_the_generation_config_flag_reaches_the_model_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], setting: str
) -> None:
    seen: list[ModelConfig] = []

    def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> runtime.Runtime:
        seen.append(model_config)
        raise ValueError("stop before loading the model")

    monkeypatch.setattr(runtime, "load_runtime", load_runtime)
    monkeypatch.delenv("HEADRACE_KEY_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # no default key store
    with pytest.raises(SystemExit):
        main(["serve", *args])
    assert [config.generation_config for config in seen] == [setting]


def keys(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> tuple[int, str, str]:
    """`headrace keys ARGS --key-store STORE` in process: exit status, stdout, stderr."""
    command, *rest = args
    try:
        main(["keys", command, "--key-store", str(store), *rest])
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_serve_help_names_every_tool_call_format(capsys: pytest.CaptureFixture[str]) -> None:
    # The flag checks its value lazily (headrace.text loads torch), so its help lists the names.
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert all(name in shown for name in TOOL_CALL_FORMATS)


def test_keys_create_list_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = tmp_path / "keys.sqlite3"
    status, out, err = keys(capsys, store, "create", "--name", "ci", "--models", "m1", "m2")
    secret = out.strip()
    assert status == 0 and secret.startswith("sk-hr-") and "\n" not in secret
    assert "shown only once" in err
    keys(capsys, store, "create", "--expires", "2999-01-02T03:04", "--rpm", "5", "--tpm", "900")
    status, out, _ = keys(capsys, store, "list")
    header, first, second = (line.split() for line in out.splitlines())
    assert " ".join(header) == "id name prefix created expires models rpm tpm revoked"
    assert first[1:3] == ["ci", secret[:12]] and first[4:] == ["-", "m1,m2", "-", "-", "-"]
    assert second[4:] == ["2999-01-02T03:04:00Z", "all", "5", "900", "-"]
    assert secret not in out
    status, _, err = keys(capsys, store, "revoke", first[0])
    assert status == 0 and f"revoked {first[0]}" in err
    revoked = keys(capsys, store, "list")[1].splitlines()[1].split()
    assert revoked[-1].endswith("Z")


def test_keys_expire_in_days(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = tmp_path / "keys.sqlite3"
    keys(capsys, store, "create", "--expires-in", "1.5")
    created, expires = keys(capsys, store, "list")[1].splitlines()[1].split()[3:5]
    lifetime = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
    assert abs(lifetime - timedelta(days=1.5)) <= timedelta(seconds=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revoke", "key_nope"], "there is no key store at"),
        (["list"], "there is no key store at"),
        (["create", "--rpm", "0"], "requests per minute must be positive, not 0"),
        (["create", "--tpm", "-1"], "tokens per minute must be positive, not -1"),
        (["create", "--expires", "2001-01-01"], "--expires must be in the future"),
        (["create", "--expires", "soon"], "must be an ISO 8601 date or time, not soon"),
        (["create", "--expires-in", "0"], "must be a positive number of days, not 0"),
        (["create", "--expires-in", "1", "--expires", "2999-01-01"], "not allowed with"),
    ],
)
def test_keys_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    store = tmp_path / "keys.sqlite3"
    status, _, err = keys(capsys, store, *args)
    assert status == 2 and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("headrace: error: ", "headrace keys "))
    assert not store.exists() or args[0] == "create"


def test_revoking_an_unknown_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = tmp_path / "keys.sqlite3"
    keys(capsys, store, "create")
    status, _, err = keys(capsys, store, "revoke", "key_nope")
    assert status == 2 and err.startswith("headrace: error: no key has the id 'key_nope'")


def test_the_key_store_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_KEY_STORE", str(tmp_path / "env.sqlite3"))
    main(["keys", "create"])
    assert (tmp_path / "env.sqlite3").exists()


def test_serve_wants_a_named_key_store_to_exist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--key-store", str(tmp_path / "missing.sqlite3")])
    assert exit.value.code == 2
    assert "there is no key store at" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite3").exists()


def test_the_data_directory_is_opened_before_the_model_loads(
    tmp_path: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> runtime.Runtime:
        raise ValueError("stop before loading the model")

    monkeypatch.setattr(runtime, "load_runtime", load_runtime)
    monkeypatch.delenv("HEADRACE_KEY_STORE", raising=False)
    with pytest.raises(SystemExit):
        main(["serve"])
    assert (data_home / "headrace" / "headrace.sqlite3").exists()
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path / "elsewhere")])
    assert (tmp_path / "elsewhere" / "headrace.sqlite3").exists()


def test_a_data_directory_in_use_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    held = MetadataStore(tmp_path / "data")
    try:
        with pytest.raises(SystemExit) as exit:
            main(["serve", "--data-dir", str(tmp_path / "data")])
    finally:
        held.close()
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("another headrace process is using it"), err
    assert "Traceback" not in err


def app_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> dict[str, Any]:
    """What `headrace serve ARGV` hands create_app, on a fake runtime, stopping there."""
    seen: dict[str, Any] = {}

    def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> Any:
        return SimpleNamespace(engine=None, model_names=("m",))

    def create_app(served: object, **options: Any) -> None:
        seen.update(options)
        raise ValueError("stop before serving")

    monkeypatch.setattr(runtime, "load_runtime", load_runtime)
    monkeypatch.setattr(app, "create_app", create_app)
    monkeypatch.delenv("HEADRACE_KEY_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["serve", *argv])
    return seen


def test_the_file_flags_reach_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    seen = app_options(monkeypatch, tmp_path, "--data-dir", str(data), "--max-file-size", "1.5")
    assert seen["max_file_bytes"] == 3 * 2**19
    assert seen["files"].directory == data / "files"
    seen["files"].store.close()


def test_the_log_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = app_options(monkeypatch, tmp_path, "--data-dir", str(tmp_path / "a"))
    assert seen["log_requests"] is False
    seen["files"].store.close()
    flags = ("--log-requests", "--log-format", "json")
    seen = app_options(monkeypatch, tmp_path, "--data-dir", str(tmp_path / "b"), *flags)
    assert seen["log_requests"] is True
    seen["files"].store.close()
    with pytest.raises(SystemExit) as exit:
        main(["serve", "--log-format", "xml"])
    assert exit.value.code == 2


def batch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`headrace batch ARGS` in process: exit status and stderr."""
    try:
        main(["batch", *args])
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    return status, capsys.readouterr().err


def test_batch_help_names_the_model_and_engine_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["batch", "--help"])
    assert exit.value.code == 0
    shown = capsys.readouterr().out
    assert "INPUT.jsonl" in shown and "--output OUTPUT.jsonl" in shown
    for flag in ("--model", "--served-model-name", "--max-num-seqs", "--kv-cache-memory"):
        assert flag in shown
    assert "--enforce-eager" in shown and "--tool-call-parser" in shown
    assert "--port" not in shown and "--api-key" not in shown


def test_batch_runs_a_file_with_the_flags_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[ModelConfig, EngineConfig]] = []

    def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> FakeServed:
        seen.append((model_config, engine_config))
        return FakeServed()

    monkeypatch.setattr(runtime, "load_runtime", load_runtime)
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(request_line("a", max_tokens=2) + request_line("b", model="nope"))
    flags = ["--max-num-seqs", "3", "--generation-config", "none", "--no-prefix-caching"]
    status, err = batch(capsys, str(source), "-o", str(output), *flags)
    assert status == 0, err
    lines = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [line["custom_id"] for line in lines] == ["a", "b"]
    assert [line["response"]["status_code"] for line in lines] == [200, 404]
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("headrace: 2 requests, 1 failed, 2 completion tokens in ")
    assert summary.endswith(f"tok/s); results in {output}")
    ((model_config, engine_config),) = seen
    assert model_config.generation_config == "none"
    assert engine_config.max_num_seqs == 3 and not engine_config.enable_prefix_caching


@pytest.mark.parametrize(
    ("content", "errors"),
    [
        (
            b'{"custom_id": "a"}\n[]\n',
            [
                "in.jsonl:1: missing_required_parameter: Missing required parameter: 'method'.",
                "in.jsonl:2: invalid_json_line: This line is not a JSON object.",
            ],
        ),
        (b"", ["in.jsonl: empty_file: The batch input file is empty."]),
    ],
)
def test_a_bad_batch_file_is_each_error_and_status_1_before_any_loading(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    errors: list[str],
) -> None:
    def load_runtime(model_config: ModelConfig, engine_config: EngineConfig) -> None:
        raise AssertionError("a bad file loads no model")

    monkeypatch.setattr(runtime, "load_runtime", load_runtime)
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(content)
    status, err = batch(capsys, str(source), "-o", str(output))
    assert status == 1 and "Traceback" not in err
    *shown, last = err.strip().splitlines()
    assert len(shown) == len(errors)
    for line, error in zip(shown, errors, strict=True):
        assert line.startswith(f"{tmp_path}/{error}")
    assert last == f"headrace: error: {source} is not a valid batch input file"
    assert not output.exists()


@pytest.mark.parametrize(
    ("input_name", "output_name", "message"),
    [
        ("missing.jsonl", "out.jsonl", "there is no batch input file at"),
        ("in.jsonl", "no-such-dir/out.jsonl", "cannot write the output to"),
    ],
)
def test_batch_paths_that_cannot_be_used_are_one_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    input_name: str,
    output_name: str,
    message: str,
) -> None:
    (tmp_path / "in.jsonl").write_bytes(request_line("a"))
    status, err = batch(capsys, str(tmp_path / input_name), "-o", str(tmp_path / output_name))
    assert status == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("headrace: error: ") and message in line
