"""Prometheus metrics of the gateway (prefix `gateway_`); also the orchestrator's Observer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.gateway.domain import Metadata

_STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """Requests by tier and outcome, cache hit rate, escalations, cost, savings, stages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("gateway_requests", "Answered requests by tier and outcome "
                                "(hit, miss, escalated).", ["tier", "outcome"],
                                registry=registry)
        self.errors = Counter("gateway_errors", "Refused or failed requests by status code.",
                              ["code"], registry=registry)
        self.cache = Counter("gateway_cache_lookups", "Cache lookups by status "
                             "(hit, miss, skipped, unavailable).", ["status"],
                             registry=registry)
        self.escalations = Counter("gateway_escalations", "Answers that moved up a tier.",
                                   registry=registry)
        self.generations = Counter("gateway_generations", "Generations started, by tier.",
                                   ["tier"], registry=registry)
        self.speculations = Counter("gateway_speculations", "First-tier calls started while "
                                    "scoring (`speculate`), by outcome: taken (routed there) "
                                    "or dropped (routed elsewhere, cancelled).", ["outcome"],
                                    registry=registry)
        self.coalesced = Counter("gateway_coalesced", "Requests that joined an identical "
                                 "one in flight.", registry=registry)
        self.side_failures = Counter("gateway_side_call_failures", "Failed or slow cache and "
                                     "classifier calls (served as misses).",
                                     ["service", "call"], registry=registry)
        self.cost = Counter("gateway_cost", "Cost of answers, in the configured unit.",
                            registry=registry)
        self.top_tier_cost = Counter("gateway_cost_if_top_tier", "What the same answers would "
                                     "have cost from the most capable tier.", registry=registry)
        self.tier_up = Gauge("gateway_tier_up", "1 while a tier can take work (through the "
                             "broker: a live broker with a healthy replica), by tier.",
                             ["tier"], registry=registry)
        self.stage = Histogram("gateway_stage_seconds", "Latency per stage.", ["stage"],
                               buckets=_STAGE_BUCKETS, registry=registry)

    def side_call_failed(self, service: str, call: str) -> None:
        self.side_failures.labels(service, call).inc()

    def generation(self, tier: str) -> None:
        self.generations.labels(tier).inc()

    def speculated(self, taken: bool) -> None:
        self.speculations.labels("taken" if taken else "dropped").inc()

    def answered(self, meta: Metadata) -> None:
        if meta.cache_status == "hit":
            outcome = "hit"
        elif len(meta.tiers_tried) > 1:
            outcome = "escalated"
            self.escalations.inc(len(meta.tiers_tried) - 1)
        else:
            outcome = "miss"
        self.requests.labels(meta.tier, outcome).inc()
        self.cache.labels(meta.cache_status).inc()
        self.cost.inc(meta.cost)
        self.top_tier_cost.inc(max(0.0, meta.cost + meta.saving))
        for stage, ms in meta.latency_ms.items():
            self.stage.labels(stage.removesuffix("_ms")).observe(ms / 1000)
