"""The Prometheus families, under vLLM's names with a `headrace:` prefix (docs/metrics.md).

Each is updated where its event happens: a request's families once, from its record, as it ends
(`observe`); the HTTP ones as each response ends (`count_response`). The engine's gauges and its
preemptions are read when Prometheus scrapes, so the step loop pays nothing for them; they are
also exported under vLLM's names (`vllm:num_requests_waiting` and the like), which the
Kubernetes Gateway API inference extension's endpoint picker scrapes by default.

Every family lives in the Metrics' own registry, never prometheus_client's global one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from headrace.engine.client import EngineClient
from headrace.serving import ChoiceEnd, RequestRecord

__all__ = ["CONTENT_TYPE", "REFUSED_STATUSES", "Metrics"]

# The media type of `Metrics.exposition`: Prometheus's text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# The statuses of a request turned away: rate limited (429), overloaded or draining (503).
REFUSED_STATUSES = frozenset({429, 503})

_PREFIX = "headrace:"
# vLLM's buckets, in seconds.
_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
_REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
_FINISH_REASONS: tuple[ChoiceEnd, ...] = ("stop", "length", "tool_calls", "abort", "error")


class Metrics:
    """The families of one served model, labelled `model_name`, in a registry of their own."""

    def __init__(
        self,
        model_name: str,
        engine: EngineClient,
        batch_queued: Callable[[], int] | None = None,
    ) -> None:
        """model_name: the label of every per-model family (the first served name); engine:
        read at each scrape; batch_queued: Batch API requests still to run, read at each scrape
        (None: no Batch API, the gauge reads 0)."""
        # Prometheus tracks counter resets itself: the *_created series, one more per family,
        # are left out (a switch of prometheus_client's for the process, which has no others).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
        # Where every family is registered; what /metrics exposes.
        self.registry = CollectorRegistry()
        label = {"model_name": model_name}

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            family = Histogram(
                _PREFIX + name, doc, ["model_name"], buckets=buckets, registry=self.registry
            )
            return family.labels(**label)

        def counter(name: str, doc: str) -> Counter:
            return Counter(_PREFIX + name, doc, ["model_name"], registry=self.registry).labels(
                **label
            )

        token_buckets = _one_two_five(engine.max_model_len)
        self._ttft = histogram(
            "time_to_first_token_seconds", "Time to first token, in seconds.", _TTFT_BUCKETS
        )
        self._itl = histogram(
            "inter_token_latency_seconds",
            "Time between a sequence's successive engine outputs, in seconds.",
            _ITL_BUCKETS,
        )
        self._e2e = histogram(
            "e2e_request_latency_seconds",
            "End-to-end request latency, in seconds.",
            _REQUEST_BUCKETS,
        )
        self._queue = histogram(
            "request_queue_time_seconds",
            "Time a request waited in the engine's queue before it was first scheduled, in "
            "seconds.",
            _REQUEST_BUCKETS,
        )
        self._prefill = histogram(
            "request_prefill_time_seconds",
            "Time from a request's first scheduling to its first token, in seconds.",
            _REQUEST_BUCKETS,
        )
        self._decode = histogram(
            "request_decode_time_seconds",
            "Time from a request's first token to its last, in seconds.",
            _REQUEST_BUCKETS,
        )
        self._prompt_histogram = histogram(
            "request_prompt_tokens", "Prompt tokens per request.", token_buckets
        )
        self._generation_histogram = histogram(
            "request_generation_tokens", "Tokens generated per request.", token_buckets
        )
        self._prompt_tokens = counter("prompt_tokens", "Prompt tokens, of every request.")
        self._generation_tokens = counter("generation_tokens", "Tokens generated.")
        self._cache_queries = counter(
            "prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self._cache_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        success = Counter(
            _PREFIX + "request_success",
            "Requests' choices ended, by how they ended.",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )
        # The request_success child of each finish reason, all present from the start.
        self._finished = {
            reason: success.labels(model_name=model_name, finished_reason=reason)
            for reason in _FINISH_REASONS
        }
        self._responses = Counter(
            _PREFIX + "http_responses",
            "HTTP responses, by route template and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._refused = Counter(
            _PREFIX + "requests_refused",
            "Requests turned away: rate limited (429), overloaded or draining (503).",
            ["status"],
            registry=self.registry,
        )
        for status in REFUSED_STATUSES:  # present from the start, at 0
            self._refused.labels(status=str(status))
        self.registry.register(_EngineCollector(model_name, engine, batch_queued))

    def observe(self, record: RequestRecord) -> None:
        """Counts one request that ended, from its record."""
        if record.ttft_s is not None:
            self._ttft.observe(record.ttft_s)
        for interval in record.inter_token_s:
            self._itl.observe(interval)
        self._e2e.observe(record.e2e_s)
        if record.queue_s is not None:
            self._queue.observe(record.queue_s)
        if record.prefill_s is not None:
            self._prefill.observe(record.prefill_s)
        if record.decode_s is not None:
            self._decode.observe(record.decode_s)
        self._prompt_histogram.observe(record.prompt_tokens)
        self._generation_histogram.observe(record.completion_tokens)
        self._prompt_tokens.inc(record.prompt_tokens)
        self._generation_tokens.inc(record.completion_tokens)
        self._cache_queries.inc(record.prompt_tokens)
        self._cache_hits.inc(record.cached_tokens)
        for reason in record.finish_reasons:
            self._finished[reason].inc()

    def count_response(self, route: str, status: int) -> None:
        """Counts one HTTP response: `route` is its route's template (e.g. /v1/files/{file_id}),
        "other" when no route matched."""
        self._responses.labels(route=route, status=str(status)).inc()
        if status in REFUSED_STATUSES:
            self._refused.labels(status=str(status)).inc()

    def exposition(self) -> bytes:
        """Every family in Prometheus's text format (CONTENT_TYPE); reads the engine's gauges
        and the batch store's queue, so call it off the event loop."""
        return generate_latest(self.registry)


class _EngineCollector:
    """The gauges and the preemption counter, read from the engine at each scrape."""

    def __init__(
        self, model_name: str, engine: EngineClient, batch_queued: Callable[[], int] | None
    ) -> None:
        self._model_name = model_name
        self._engine = engine
        self._batch_queued = batch_queued

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        queued = self._batch_queued() if self._batch_queued is not None else 0
        gauges = (
            ("num_requests_running", "Requests in the engine's running batch.", stats.running),
            ("num_requests_waiting", "Requests waiting to be scheduled.", stats.waiting),
            (
                "kv_cache_usage_perc",
                "Fraction of the KV cache's blocks in use, 0 to 1.",
                stats.kv_cache_usage,
            ),
        )
        for name, doc, value in gauges:
            for prefix in (_PREFIX, "vllm:"):
                yield self._gauge(prefix + name, doc, value)
        for prefix in (_PREFIX, "vllm:"):
            yield self._cache_config(prefix + "cache_config_info")
        yield self._gauge(
            _PREFIX + "num_batch_requests_queued",
            "Requests of in-progress Batch API batches without a result yet.",
            queued,
        )
        preemptions = CounterMetricFamily(
            _PREFIX + "num_preemptions",
            "Requests preempted by the engine (their cache freed, to be computed again).",
            labels=["model_name"],
        )
        preemptions.add_metric([self._model_name], stats.num_preemptions)
        yield preemptions

    def _cache_config(self, name: str) -> GaugeMetricFamily:
        """The KV cache's shape as labels of a gauge of 1 (vLLM's form, which the endpoint
        picker reads the block size from)."""
        info = GaugeMetricFamily(
            name,
            "The KV cache's configuration, in its labels.",
            labels=["model_name", "block_size", "num_gpu_blocks"],
        )
        shape = (str(self._engine.block_size), str(self._engine.kv_cache_blocks))
        info.add_metric([self._model_name, *shape], 1)
        return info

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
        gauge.add_metric([self._model_name], value)
        return gauge


def _one_two_five(most: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to `most` (vLLM's token buckets)."""
    buckets: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > most:
                return buckets
            buckets.append(value)
        scale *= 10
