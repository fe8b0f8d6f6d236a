"""Prometheus metrics of the backend (prefix `backend_`), in the service's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class BackendMetrics:
    """TTFT, inter-token and end-to-end latency, running/waiting requests, tokens."""

    def __init__(self, registry: CollectorRegistry, tier: str) -> None:
        labels = ["tier"]
        self.ttft = Histogram(
            "backend_time_to_first_token_seconds", "Request start to first token.",
            labels, registry=registry, buckets=_LATENCY_BUCKETS,
        ).labels(tier)
        self.inter_token = Histogram(
            "backend_inter_token_latency_seconds", "Time between streamed tokens.",
            labels, registry=registry, buckets=_LATENCY_BUCKETS,
        ).labels(tier)
        self.e2e = Histogram(
            "backend_e2e_latency_seconds", "Request start to last token.",
            labels, registry=registry, buckets=_LATENCY_BUCKETS,
        ).labels(tier)
        self.prefill = Histogram(
            "backend_prefill_seconds", "Prefill calls (prompt statistics), start to answer.",
            labels, registry=registry, buckets=_LATENCY_BUCKETS,
        ).labels(tier)
        self.prompt_tokens = Counter(
            "backend_prompt_tokens", "Prompt tokens processed.", labels, registry=registry
        ).labels(tier)
        self.generation_tokens = Counter(
            "backend_generation_tokens", "Tokens generated.", labels, registry=registry
        ).labels(tier)
        self.requests = Counter(
            "backend_requests", "Finished requests by outcome.", [*labels, "outcome"],
            registry=registry,
        )
        self.prefix_queries = Counter(
            "backend_prefix_cache_queried_tokens", "Prompt tokens looked up in the prefix cache.",
            labels, registry=registry,
        ).labels(tier)
        self.prefix_hits = Counter(
            "backend_prefix_cache_hit_tokens", "Prompt tokens found in the prefix cache.",
            labels, registry=registry,
        ).labels(tier)
        self.running = Gauge(
            "backend_requests_running", "Requests the engine is running.", labels,
            registry=registry,
        ).labels(tier)
        self.waiting = Gauge(
            "backend_requests_waiting", "Requests queued in the engine.", labels,
            registry=registry,
        ).labels(tier)
        self.unfinished = Gauge(
            "backend_engine_unfinished_requests",
            "Requests the engine still tracks (running + waiting, aborts excluded).",
            labels, registry=registry,
        ).labels(tier)
        self.tier = tier

    def stat_logger_factory(self) -> Any:
        """A vLLM stat-logger factory that feeds the running/waiting gauges and the
        prefix-cache counters."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        metrics = self

        class _SchedulerGauges(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any,
                       mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
                if scheduler_stats is not None:
                    metrics.running.set(scheduler_stats.num_running_reqs)
                    metrics.waiting.set(scheduler_stats.num_waiting_reqs)
                    cache = scheduler_stats.prefix_cache_stats
                    metrics.prefix_queries.inc(cache.queries)
                    metrics.prefix_hits.inc(cache.hits)

            def log_engine_initialized(self) -> None:
                pass

        return _SchedulerGauges
