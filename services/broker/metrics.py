"""Prometheus metrics of the broker (prefix `broker_`), in the service's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class BrokerMetrics:
    """Queue depth and wait per tier and class, batch sizes, redeliveries, terminations,
    in-flight per backend, affinity hits."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "broker_queue_depth", "Jobs in the stream not yet delivered.",
            ["tier", "job_class"], registry=registry)
        self.buffered = Gauge(
            "broker_buffered_jobs", "Jobs fetched by this broker, not yet started.",
            ["tier", "job_class"], registry=registry)
        self.queue_wait = Histogram(
            "broker_queue_wait_seconds", "Publish to start on a backend.",
            ["tier", "job_class"], registry=registry, buckets=_WAIT_BUCKETS)
        self.fetched_batch = Histogram(
            "broker_fetched_batch_size", "Jobs per JetStream fetch that returned any.",
            ["tier"], registry=registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.redeliveries = Counter(
            "broker_redeliveries", "Jobs delivered more than once.", ["tier"], registry=registry)
        self.terminations = Counter(
            "broker_terminations", "Jobs terminated (never to be redelivered), by reason.",
            ["tier", "reason"], registry=registry)
        self.completed = Counter(
            "broker_jobs_completed", "Jobs answered in full and acked.", ["tier"],
            registry=registry)
        self.in_flight = Gauge(
            "broker_in_flight", "Jobs this broker runs on each backend replica.",
            ["tier", "backend"], registry=registry)
        self.dispatches = Counter(
            "broker_dispatches", "Jobs started on a replica.", ["tier"], registry=registry)
        self.affinity_hits = Counter(
            "broker_affinity_hits", "Jobs started on the replica their prefix maps to.",
            ["tier"], registry=registry)
        self.failovers = Counter(
            "broker_failovers", "Jobs that moved to another replica or back to the queue.",
            ["tier"], registry=registry)
