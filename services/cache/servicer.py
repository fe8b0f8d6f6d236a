"""gRPC Cache servicer: protobuf <-> `cache.SemanticCache`, errors -> status codes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cache.audit import Estimate
from cache.core import SemanticCache
from cache.entries import Entry
from cache.keys import Scope, Uncacheable, check_tenant
from core.errors import FieldError
from core.generation import Usage
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from services.cache.log import JetStreamLog
from services.common.convert import (
    conversation_from_proto,
    sampling_from_proto,
    timestamp,
    usage_to_proto,
)
from services.common.errors import grpc_errors

MAX_IN_FLIGHT = 32  # prompts in flight one lookup may bring


class CacheMetrics:
    """The service's Prometheus metrics (prefix `cache_`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter("cache_lookups", "Lookups.", registry=registry)
        self.hits = Counter("cache_hits", "Lookups answered from the cache (stored answers, "
                            "and answers in flight a lookup may share).", registry=registry)
        self.in_flight_matches = Counter(
            "cache_in_flight_matches", "Misses told to share an answer the caller is "
            "generating now for a verified paraphrase (counted in cache_hits too).",
            registry=registry)
        self.rejections = Counter("cache_guard_rejections",
                                  "Lookups whose candidates the verifier turned down.",
                                  registry=registry)
        self.stores = Counter("cache_stores", "Entries stored.", registry=registry)
        self.batch = Histogram("cache_embed_batch_size", "Prompts per embedding batch.",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=registry)
        self.entries = Gauge("cache_index_entries", "Entries in all indices.", registry=registry)
        self.degraded = Gauge("cache_degraded", "1 while the event log is unreachable.",
                              registry=registry)
        self.latency = Histogram("cache_lookup_seconds", "Lookup latency.", registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
        self.audit_verdicts = Counter(
            "cache_audit_verdicts", "Judge verdicts by kind (hit, near_miss) and verdict "
            "(same, different).", ["kind", "verdict"], registry=registry)
        self.audit_share = Gauge(
            "cache_audit_wrong_share", "Audited wrong-hit share per tenant at the bound in "
            "force: the estimate and its Clopper-Pearson limits (low, high).",
            ["tenant", "value"], registry=registry)
        self.audit_delta = Gauge(
            "cache_audit_effective_delta", "The δ a tenant's hits are held to now (the "
            "configured δ until audits tighten it).", ["tenant"], registry=registry)
        self.registry = registry

    def audited(self, kind: str, same: bool, estimate: Estimate) -> None:
        self.audit_verdicts.labels(kind, "same" if same else "different").inc()
        for value, x in (("estimate", estimate.share), ("low", estimate.low),
                         ("high", estimate.high)):
            self.audit_share.labels(estimate.tenant, value).set(x)
        self.audit_delta.labels(estimate.tenant).set(estimate.effective_delta)

    def follow(self, event_log: JetStreamLog) -> None:
        """Export the event log's counters (refused, not durable, dead letters, pending)."""
        self.registry.register(_LogCollector(event_log))


class _LogCollector(Collector):
    """Reads the log's counters at scrape time, so no write path touches Prometheus."""

    def __init__(self, event_log: JetStreamLog) -> None:
        self.log = event_log

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.log.counters
        yield CounterMetricFamily("cache_log_refused_writes",
                                  "Writes refused because the write buffer was full.",
                                  value=c.refused)
        yield CounterMetricFamily("cache_log_not_durable_writes",
                                  "Writes answered durable=false (buffered, not yet acked).",
                                  value=c.not_durable)
        yield CounterMetricFamily("cache_log_dead_letters",
                                  "Events sent to the dead-letter subject.", value=c.dead_letters)
        yield CounterMetricFamily("cache_log_rejections",
                                  "Publishes the stream rejected (every try).", value=c.rejections)
        yield GaugeMetricFamily("cache_log_pending_writes", "Writes waiting for a JetStream ack.",
                                value=self.log.pending)
        lag = GaugeMetricFamily("cache_replication_lag_seconds",
                                "Seconds from another region's write to its apply here (the "
                                "latest event of each source region).",
                                labels=["source_region"])
        replicated = CounterMetricFamily("cache_replicated_events",
                                         "Events of other regions applied here.",
                                         labels=["source_region"])
        for region, seconds in sorted(c.lag_s.items()):
            lag.add_metric([region], seconds)
        for region, count in sorted(c.replicated.items()):
            replicated.add_metric([region], count)
        yield lag
        yield replicated


class CacheServicer(cache_pb2_grpc.CacheServicer):
    """Translates messages; the cache decides. Degraded state comes from `log_state`."""

    def __init__(self, cache: SemanticCache, metrics: CacheMetrics, max_prompt_chars: int,
                 max_answer_chars: int, log_state: object | None = None) -> None:
        self.cache = cache
        self.metrics = metrics
        self.max_prompt_chars = max_prompt_chars
        self.max_answer_chars = max_answer_chars
        self.log_state = log_state

    def _text(self, value: str, field: str, limit: int) -> str:
        if not value.strip():
            raise FieldError(field, "must not be empty")
        if len(value) > limit:
            raise FieldError(field, f"longer than {limit} characters")
        return value

    def _scope(self, msg: cache_pb2.Scope, field: str = "scope") -> Scope:
        if not msg.tenant:
            raise FieldError(f"{field}.tenant", "is required")
        check_tenant(msg.tenant, f"{field}.tenant")
        conversation = conversation_from_proto(msg.conversation, f"{field}.conversation")
        return Scope(tenant=msg.tenant, conversation=conversation,
                     sampling=sampling_from_proto(msg.sampling), policy=msg.policy)

    @grpc_errors
    async def Lookup(self, request: cache_pb2.LookupRequest,
                     context: grpc.aio.ServicerContext) -> cache_pb2.LookupResponse:
        scope = self._scope(request.scope)
        prompt = self._text(request.prompt, "prompt", self.max_prompt_chars)
        started = time.perf_counter()
        self.metrics.lookups.inc()
        in_flight = self._in_flight(request.in_flight)
        vector = None
        try:
            if request.return_embedding or in_flight:
                result, vector = await self.cache.lookup_with_vector(scope, prompt)
            else:
                result = await self.cache.lookup(scope, prompt)
            match = None
            if not result.hit and in_flight and vector is not None:
                match = await self.cache.match_in_flight(scope, prompt, vector, in_flight)
        except Uncacheable:
            return cache_pb2.LookupResponse(hit=False)
        self.metrics.latency.observe(time.perf_counter() - started)
        reply = cache_pb2.LookupResponse(hit=result.hit, similarity=result.similarity,
                                         verifier_probability=result.probability,
                                         namespace=result.namespace)
        if vector is not None and request.return_embedding:
            reply.embedding.extend(vector.tolist())
        if result.hit and result.entry is not None:
            self.metrics.hits.inc()
            reply.entry.CopyFrom(_entry(result.entry))
        elif match is not None:
            self.metrics.hits.inc()
            self.metrics.in_flight_matches.inc()
            reply.in_flight_match = match.index + 1
            reply.similarity, reply.verifier_probability = match.similarity, match.probability
        elif result.candidate is not None:
            self.metrics.rejections.inc()
            near = self.cache.near_miss(result)
            if near is not None:
                reply.near_miss.id, reply.near_miss.prompt = near.id, near.prompt
        return reply

    def _in_flight(self, given: Sequence[cache_pb2.InFlight]) -> list[tuple[str, np.ndarray]]:
        """The lookup's prompts in flight, each checked (field named on a bad one)."""
        dim, out = self.cache.dim, []
        if len(given) > MAX_IN_FLIGHT:
            raise FieldError("in_flight", f"at most {MAX_IN_FLIGHT} prompts")
        for i, item in enumerate(given):
            text = self._text(item.prompt, f"in_flight[{i}].prompt", self.max_prompt_chars)
            if len(item.embedding) != dim:
                raise FieldError(f"in_flight[{i}].embedding",
                                 f"has {len(item.embedding)} values; the cache embeds in {dim}")
            out.append((text, np.asarray(item.embedding, dtype=np.float32)))
        return out

    @grpc_errors
    async def Audit(self, request: cache_pb2.AuditRequest,
                    context: grpc.aio.ServicerContext) -> cache_pb2.AuditEstimate:
        _required_tenant(request.tenant)
        if not request.entry_id:
            raise FieldError("entry_id", "is required")
        estimate = self.cache.record_verdict(request.tenant, request.entry_id,
                                             hit=request.hit, same=request.same)
        self.metrics.audited("hit" if request.hit else "near_miss", request.same, estimate)
        return _estimate(estimate)

    @grpc_errors
    async def Store(self, request: cache_pb2.StoreRequest,
                    context: grpc.aio.ServicerContext) -> cache_pb2.StoreResponse:
        scope = self._scope(request.scope)
        prompt = self._text(request.prompt, "prompt", self.max_prompt_chars)
        answer = self._text(request.answer, "answer", self.max_answer_chars)
        try:
            stored = await self.cache.store_with_receipt(
                scope, prompt, answer, tier=request.tier,
                prompt_tokens=request.usage.prompt_tokens,
                completion_tokens=request.usage.completion_tokens)
        except Uncacheable as exc:
            return cache_pb2.StoreResponse(stored=False, reason=str(exc))
        self.metrics.stores.inc()
        self._gauges()
        entry = stored.entry
        return cache_pb2.StoreResponse(
            stored=True, entry_id=entry.id, namespace=entry.namespace, durable=stored.durable,
            reason="" if stored.durable else "not durable: the event log has not acknowledged it")

    @grpc_errors
    async def Invalidate(self, request: cache_pb2.InvalidateRequest,
                         context: grpc.aio.ServicerContext) -> cache_pb2.InvalidateResponse:
        _required_tenant(request.tenant)
        target = request.WhichOneof("target")
        if target == "entry_id":
            outcome = await self.cache.invalidate_entry(request.tenant, request.entry_id)
        elif target == "scope":
            scope = self._scope(request.scope, "scope")
            if scope.tenant != request.tenant:
                raise FieldError("scope.tenant", "differs from tenant")
            outcome = await self.cache.invalidate_namespace(scope)
        elif target == "whole_tenant" and request.whole_tenant:
            outcome = await self.cache.invalidate_tenant(request.tenant)
        else:
            raise FieldError("target", "one of entry_id, scope, whole_tenant is required")
        self._gauges()
        return cache_pb2.InvalidateResponse(removed=outcome.removed, durable=outcome.durable)

    @grpc_errors
    async def Stats(self, request: cache_pb2.StatsRequest,
                    context: grpc.aio.ServicerContext) -> cache_pb2.StatsResponse:
        if request.tenant:
            check_tenant(request.tenant)
        stats = self.cache.stats(request.tenant or None)
        bound = self.cache.bound
        degraded = bool(getattr(self.log_state, "degraded", False))
        self._gauges()
        return cache_pb2.StatsResponse(
            entries=stats.entries, namespaces=stats.namespaces, lookups=stats.lookups,
            hits=stats.hits, guard_rejections=stats.guard_rejections, evictions=stats.evictions,
            expirations=stats.expirations, delta=self.cache.config.delta,
            expected_hit_rate=bound.expected_hit_rate,
            expected_wrong_hit_rate=bound.expected_wrong_share, degraded=degraded,
            pending_writes=int(getattr(self.log_state, "pending", 0)),
            refused_writes=self.log_state.counters.refused
            if isinstance(self.log_state, JetStreamLog) else 0,
            audits=[_estimate(self.cache.audit.estimate(t))
                    for t in ([request.tenant] if request.tenant
                              else self.cache.audit.tenants())])

    def _gauges(self) -> None:
        self.metrics.entries.set(self.cache.stats().entries)
        self.metrics.degraded.set(float(bool(getattr(self.log_state, "degraded", False))))


def _required_tenant(tenant: str) -> str:
    """`tenant`, present and well formed, else FieldError naming `tenant`."""
    if not tenant:
        raise FieldError("tenant", "is required")
    return check_tenant(tenant)


def _estimate(e: Estimate) -> cache_pb2.AuditEstimate:
    return cache_pb2.AuditEstimate(
        tenant=e.tenant, verdicts=e.verdicts, wrong=e.wrong, low=e.low, high=e.high,
        step=e.step, effective_delta=e.effective_delta, threshold=e.threshold,
        near_misses=e.near_misses, near_misses_same=e.near_misses_same)


def _entry(e: Entry) -> cache_pb2.Entry:
    return cache_pb2.Entry(
        id=e.id, prompt=e.prompt, answer=e.answer, tier=e.tier,
        usage=usage_to_proto(Usage(e.prompt_tokens, e.completion_tokens)),
        created=timestamp(e.created), last_hit=timestamp(e.last_hit), hit_count=e.hit_count)
