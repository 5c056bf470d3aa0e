"""lm-evaluation-harness and litellm, unchanged, against the real server; offline.

The tasks are the two local ones in lm_eval_tasks/: no data set or tokenizer comes from
the hub. lm-eval runs in this process through `lm_eval.simple_evaluate`, as its CLI does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from headrace.model.source import resolve_model
from tests.e2e.conftest import MODEL_NAMES, Server, running_server

pytestmark = pytest.mark.e2e

MODEL = MODEL_NAMES[0]
TASKS = Path(__file__).parent / "lm_eval_tasks"
# The tasks name their data files from here, as a user's command line in the checkout would.
REPOSITORY = TASKS.parents[2]
MC_TASK = "headrace_facts_mc"
QA_TASK = "headrace_facts_qa"
# headrace's float32 loglikelihoods against transformers' (lm-eval `hf`) on the same
# dequantized GGUF weights: 1.8e-5 apart at most over the 80 (context, ending) pairs, the
# rounding of two float32 forward passes that sum in different orders; 1e-4 leaves room
# for another CPU's kernels and still catches a token's logprob lost or taken off by one.
LOGLIKELIHOOD_TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """Nothing from the hub, litellm's price list from its own package, the checkout as cwd."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.setenv(name, "1")
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.chdir(REPOSITORY)
        yield


@pytest.fixture(scope="module")
def gguf() -> Path:
    return Path(resolve_model(None).path)


@pytest.fixture(scope="module")
def tokenizer_dir(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GGUF's tokenizer as a Hugging Face directory: lm-eval counts context tokens with it."""
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def transformers_model(gguf: Path) -> Iterator[Future[Any]]:
    """transformers' own float32 model of the GGUF (its loader dequantizes, not headrace's),
    loading in a thread while the float32 server starts: about 12 s, mostly reading the file."""
    import torch
    from transformers import AutoModelForCausalLM

    load = AutoModelForCausalLM.from_pretrained
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(load, gguf.parent, gguf_file=gguf.name, dtype=torch.float32)


@pytest.fixture(scope="module")
def float32_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The GGUF's weights dequantized to float32, as transformers loads them. Its decode step
    is compiled, as a user's would be: the compiled float32 step once corrupted the heap at
    start on AVX-512 CPUs (headrace/model/compiled.py)."""
    flags = ("--quantization", "none", "--dtype", "float32")
    log_dir = tmp_path_factory.mktemp("float32")
    with running_server(log_dir, *flags, "--kv-cache-memory", "0.25") as server:
        yield server


def evaluate(model: Any, model_args: dict[str, Any], task: str, **options: Any) -> dict[str, Any]:
    """`lm_eval --model MODEL --model_args ... --tasks TASK --include_path lm_eval_tasks
    --log_samples`, without lm-eval's own tasks (indexing them takes seconds); MODEL may be
    an lm-eval model object instead of a name."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(TASKS), include_defaults=False)
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[task],
        task_manager=tasks,
        bootstrap_iters=0,
        log_samples=True,
        **options,
    )
    assert results is not None
    return results  # type: ignore[no-any-return]


def completions_args(server: Server, tokenizer_dir: Path) -> dict[str, Any]:
    return {
        "model": MODEL,
        "base_url": f"{server.base_url}/completions",
        "tokenizer_backend": "huggingface",
        "tokenizer": str(tokenizer_dir),
        "num_concurrent": 4,
        # Four token lists in one request: headrace answers one choice per prompt.
        "batch_size": 4,
        "max_retries": 1,
    }


def loglikelihoods(results: dict[str, Any]) -> dict[tuple[int, int], float]:
    """(document, choice) -> the loglikelihood of that choice after the document's text."""
    return {
        (sample["doc_id"], choice): response[0][0]
        for sample in results["samples"][MC_TASK]
        for choice, response in enumerate(sample["resps"])
    }


def test_local_completions_runs_a_multiple_choice_task(
    server: Server, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    results = evaluate("local-completions", completions_args(server, tokenizer_dir), MC_TASK)
    scores = loglikelihoods(results)
    assert len(scores) == 20 * 4
    assert all(math.isfinite(score) and score < 0 for score in scores.values())
    # The facts are easy: the Q4_1 weights in bfloat16 pick 19 of 20, as float32 ones do.
    assert results["results"][MC_TASK]["acc,none"] >= 0.8


def test_loglikelihoods_match_lm_evals_hf_backend_on_the_same_weights(
    transformers_model: Future[Any],
    float32_server: Server,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    monkeypatch.setenv("OPENAI_API_KEY", float32_server.api_key)
    served = evaluate("local-completions", completions_args(float32_server, tokenizer_dir), MC_TASK)
    # `--model hf --model_args pretrained=DIR,gguf_file=FILE,dtype=float32` with the model
    # and tokenizer already loaded (the GGUF's tokenizer, saved): the same backend and weights.
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    hf = HFLM(pretrained=transformers_model.result(), tokenizer=tokenizer, batch_size=8)
    reference = evaluate(hf, {}, MC_TASK)
    ours, theirs = loglikelihoods(served), loglikelihoods(reference)
    assert ours.keys() == theirs.keys()
    worst = max(ours, key=lambda key: abs(ours[key] - theirs[key]))
    assert ours[worst] == pytest.approx(theirs[worst], abs=LOGLIKELIHOOD_TOLERANCE), worst
    served_acc = served["results"][MC_TASK]["acc,none"]
    assert served_acc == reference["results"][MC_TASK]["acc,none"]


def test_a_continuation_the_model_would_end_keeps_its_last_token(
    float32_server: Server, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from transformers import AutoTokenizer

    monkeypatch.setenv("OPENAI_API_KEY", float32_server.api_key)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    template = AutoTokenizer.from_pretrained(tokenizer_dir)
    context = template.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    context += "The capital of France is"
    # Greedy decoding ends the answer right after it: <|im_end|>, the stop token, at -0.26
    # against -3.2 for the next best.
    continuation = " Paris."
    lm = LocalCompletionsAPI(**completions_args(float32_server, tokenizer_dir))
    request = Instance("loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    [(score, _greedy)] = lm.loglikelihood([request], disable_tqdm=True)
    # headrace's own scoring of the whole text: every position's logprob, none generated.
    scored = httpx.post(
        f"{float32_server.base_url}/completions",
        headers={"Authorization": f"Bearer {float32_server.api_key}"},
        json={
            "model": MODEL,
            "prompt": context + continuation,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 0,
        },
        timeout=60,
    ).json()["choices"][0]["logprobs"]
    context_tokens = len(template(context, add_special_tokens=False).input_ids)
    expected = sum(scored["token_logprobs"][context_tokens:])
    assert len(scored["tokens"]) == context_tokens + 2  # " Paris", "."
    assert score == pytest.approx(expected, abs=LOGLIKELIHOOD_TOLERANCE)


def test_local_chat_completions_runs_a_generation_task(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    model_args = {
        "model": MODEL,
        "base_url": f"{server.base_url}/chat/completions",
        "num_concurrent": 4,
        "max_retries": 1,
    }
    results = evaluate("local-chat-completions", model_args, QA_TASK, apply_chat_template=True)
    samples = results["samples"][QA_TASK]
    assert len(samples) == 6
    answers = [sample["resps"][0][0] for sample in samples]
    assert all(isinstance(answer, str) and answer.strip() for answer in answers), answers
    # One line each: the task's "\n" went to headrace as a stop string.
    assert not any("\n" in answer for answer in answers), answers
    # Batches of bfloat16 rows may tip a greedy step ("blue" one run, "indigo" the next).
    assert results["results"][QA_TASK]["exact_match,last_word"] >= 0.5, answers


@pytest.fixture(scope="module")
def litellm_args(server: Server) -> dict[str, Any]:
    # After `offline`: litellm reads LITELLM_LOCAL_MODEL_COST_MAP when first imported.
    import litellm

    litellm.telemetry = False
    return {"model": f"openai/{MODEL}", "api_base": server.base_url, "api_key": server.api_key}


def test_litellm_text_completion(litellm_args: dict[str, Any]) -> None:
    import litellm

    response = litellm.text_completion(
        prompt="The capital of France is", max_tokens=8, temperature=0, **litellm_args
    )
    [choice] = response.choices
    assert choice.text.strip()
    assert choice.finish_reason == "length"
    assert response.usage.prompt_tokens == 5
    assert response.usage.completion_tokens == 8
    assert response.usage.total_tokens == 13


def test_litellm_text_completion_streams_with_usage(litellm_args: dict[str, Any]) -> None:
    import litellm

    chunks = list(
        litellm.text_completion(
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            **litellm_args,
        )
    )
    text = "".join(chunk.choices[0].text or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert [reason for reason in reasons if reason] == ["length"]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 8, 13)


def test_litellm_chat_completion(litellm_args: dict[str, Any]) -> None:
    import litellm

    response = litellm.completion(
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        **litellm_args,
    )
    [choice] = response.choices
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_litellm_chat_completion_streams_with_usage(litellm_args: dict[str, Any]) -> None:
    import litellm

    chunks = list(
        litellm.completion(
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            **litellm_args,
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Paris" in text
    reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert [reason for reason in reasons if reason] in (["stop"], ["length"])
    usage = chunks[-1].usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
