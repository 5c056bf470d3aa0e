"""/metrics and the request log on the real server: one chat through the real SDK moves the
families by exactly itself, and its x-request-id is the one its log line names."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODEL_NAMES, Server

pytestmark = pytest.mark.e2e
# Every per-model family is labelled with the first served name.
MODEL = (("model_name", MODEL_NAMES[0]),)


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample's value by name and labels; no key needed."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_a_chat_moves_the_metrics_and_logs_its_id(server: Server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    before = scrape(server)
    completion = client.chat.completions.create(
        model=MODEL_NAMES[1],  # an alias: counted under the first name
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=12,
        temperature=0,
    )
    after = scrape(server)
    assert completion.usage is not None

    def moved(name: str, labels: tuple[tuple[str, str], ...] = MODEL) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert moved("headrace:time_to_first_token_seconds_count") == 1
    assert moved("headrace:e2e_request_latency_seconds_count") == 1
    assert moved("headrace:generation_tokens_total") == completion.usage.completion_tokens
    assert moved("headrace:prompt_tokens_total") == completion.usage.prompt_tokens
    reason = completion.choices[0].finish_reason
    assert moved("headrace:request_success_total", (("finished_reason", reason), *MODEL)) == 1
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert (f"vllm:{name}", MODEL) in after
    # The KV cache's shape, as the server's start logged it ("5824 blocks of 16 tokens").
    (cache_info,) = [labels for name, labels in after if name == "vllm:cache_config_info"]
    shape = dict(cache_info)
    assert f"{shape['num_gpu_blocks']} blocks of {shape['block_size']} tokens" in (
        server.log.read_text()
    )
    request_id = completion._request_id
    assert request_id is not None and request_id.startswith("req_")
    deadline = time.monotonic() + 10
    while f"request_id={request_id} " not in server.log.read_text():
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.1)
    (line,) = [line for line in server.log.read_text().splitlines() if request_id in line]
    assert "route=/v1/chat/completions status=200" in line
    assert f"model={MODEL_NAMES[1]}" in line and f"finish_reason={reason}" in line
    assert f"completion_tokens={completion.usage.completion_tokens}" in line
    assert server.api_key not in line and "colours" not in line
