"""The semantic cache: the async surface over its three parts, wired by constructor.

A lookup embeds the prompt, takes the namespace's nearest entries above a
loose similarity floor (`cache.store.NamespaceStore`), and asks the verifier
whether each one is the same question with the same answer
(`cache.decision.HitDecision`). Writes go through the `EntryLog` and change
the entries only when the log hands them back in its one order
(`cache.replica.ReplicaState`, the log's `EventSink`).

Wiring: `CacheParts.build` makes the store, the decision and the replica
state; a log, if any, is built on `parts.replica`; then `SemanticCache(embed,
parts, log)`. `SemanticCache.build` does all of it for a cache without a log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cache.audit import AuditBook, AuditConfig, Estimate
from cache.calibration import Bound
from cache.decision import HitDecision, InFlightMatch, LookupResult, Verifier
from cache.entries import Entry, Event
from cache.keys import Scope, namespace_of
from cache.replica import EventSink, ReplicaState
from cache.store import Candidate, NamespaceStore, Stats, StoreConfig
from core.errors import FieldError

__all__ = ["CacheConfig", "CacheParts", "Candidate", "EntryLog", "EventSink", "InFlightMatch",
           "Invalidated", "LookupQueue", "LookupResult", "SemanticCache", "Stats", "Stored",
           "Verifier"]


class EntryLog(Protocol):
    """Where events go so that other replicas (and restarts) see them, in one order."""

    async def append(self, event: Event) -> int | None:
        """Record `event`: its sequence once durable, None if only buffered (not durable).

        Raises a domain error (unavailable, overloaded) when it cannot take it."""

    async def caught_up(self, seq: int) -> bool:
        """Wait until this replica has applied everything through `seq`."""

    async def settled(self) -> None:
        """Wait until the events the sink decided (evictions) have been handed on."""


class LookupQueue(Protocol):
    """Where `lookup` sends work when a lookup worker serves this cache."""

    async def submit(self, ns: str, prompt: str) -> LookupResult:
        """The lookup of `prompt` in namespace `ns`."""


@dataclass(frozen=True)
class CacheConfig:
    """The domain knobs (the service fills these from its settings)."""

    delta: float = 0.02
    similarity_floor: float = 0.55
    top_k: int = 4
    rival_window: float = 0.1
    ttl_s: float = 86_400.0
    max_entries_per_namespace: int = 10_000
    hnsw_from: int = 20_000
    allow_sampling: bool = False
    use_gpu: bool = True
    audit: AuditConfig = field(default_factory=AuditConfig)
    near_miss_margin: float = 0.2  # a miss this close under the bound may be audited

    def store_config(self, dim: int) -> StoreConfig:
        """The store's share of these knobs."""
        return StoreConfig(dim=dim, ttl_s=self.ttl_s,
                           max_entries_per_namespace=self.max_entries_per_namespace,
                           hnsw_from=self.hnsw_from, use_gpu=self.use_gpu,
                           similarity_floor=self.similarity_floor, top_k=self.top_k,
                           rival_window=self.rival_window)


@dataclass(frozen=True)
class CacheParts:
    """The cache's three jobs, built once and shared by constructor."""

    config: CacheConfig
    counters: Stats
    store: NamespaceStore
    decision: HitDecision
    replica: ReplicaState

    @classmethod
    def build(cls, verifier: Verifier, dim: int, config: CacheConfig | None = None,
              clock: Callable[[], float] = time.time) -> CacheParts:
        """Store, decision and ordering state on one set of counters."""
        config = config or CacheConfig()
        counters = Stats()
        store = NamespaceStore(config.store_config(dim), counters, clock)
        audit = AuditBook(config.delta, lambda d: verifier.bound(d).threshold, config.audit)
        return cls(config, counters, store,
                   HitDecision(verifier, config.delta, store, counters, audit),
                   ReplicaState(store))


@dataclass(frozen=True)
class Stored:
    """A store's outcome: `durable` once the log acknowledged it."""

    entry: Entry
    durable: bool


@dataclass(frozen=True)
class Invalidated:
    """An invalidation's outcome: entries removed here, and whether it is durable."""

    removed: int
    durable: bool


class SemanticCache:
    """Namespaced, verifier-guarded semantic cache; transport-free."""

    def __init__(self, embed: Callable[[str], Awaitable[np.ndarray]], parts: CacheParts,
                 log: EntryLog | None = None) -> None:
        self._embed = embed
        self.parts = parts
        self.config = parts.config
        self.log = log
        self._store = parts.store
        self._decision = parts.decision
        self._replica = parts.replica
        self.lookups: LookupQueue | None = None  # set by `cache.lookup.LookupWorker`

    @classmethod
    def build(cls, embed: Callable[[str], Awaitable[np.ndarray]], verifier: Verifier, dim: int,
              config: CacheConfig | None = None,
              clock: Callable[[], float] = time.time) -> SemanticCache:
        """A cache without an event log (one replica: evaluation, benchmarks, warm-up)."""
        return cls(embed, CacheParts.build(verifier, dim, config, clock))

    @property
    def verifier(self) -> Verifier:
        return self._decision.verifier

    @property
    def dim(self) -> int:
        return self._store.config.dim

    @property
    def clock(self) -> Callable[[], float]:
        return self._store.clock

    @property
    def counters(self) -> Stats:
        return self.parts.counters

    @property
    def bound(self) -> Bound:
        return self._decision.bound

    @property
    def threshold(self) -> float:
        return self._decision.threshold

    @property
    def audit(self) -> AuditBook:
        return self._decision.audit

    def near_miss(self, result: LookupResult) -> Entry | None:
        """The best candidate of a miss that came within `near_miss_margin` of the bound
        its tenant needs (what an audit of near-misses judges), else None."""
        c = result.candidate
        if result.hit or c is None:
            return None
        need = self.audit.threshold(c.tenant)
        return c if result.probability >= need - self.config.near_miss_margin else None

    def record_verdict(self, tenant: str, entry_id: str, *, hit: bool,
                       same: bool) -> Estimate:
        """A judge's verdict on a hit or near-miss of `tenant`; an entry this replica holds
        for another tenant is refused (`FieldError` on entry_id)."""
        entry = self._store.get(entry_id)
        if entry is not None and entry.tenant != tenant:
            raise FieldError("entry_id", "not an entry of this tenant")
        return self.audit.record(tenant, hit=hit, same=same)

    # ---- public async surface -------------------------------------------------------
    def namespace(self, scope: Scope) -> str:
        """The namespace of `scope` (raises `Uncacheable` per settings)."""
        return namespace_of(scope, self.config.allow_sampling)

    async def lookup(self, scope: Scope, prompt: str) -> LookupResult:
        """Find a verified answer for `prompt` in `scope`'s namespace."""
        ns = self.namespace(scope)
        if ns not in self._store.spaces:
            self.counters.lookups += 1
            return LookupResult(hit=False, namespace=ns)
        if self.lookups is not None:  # embed + verify micro-batched in the lookup worker
            return await self.lookups.submit(ns, prompt)
        vector = (await self._embed(prompt)).reshape(1, -1)
        rows = self.candidates(ns, vector)
        probs = await asyncio.to_thread(self.verify, [prompt], vector, rows)
        return self.decide(ns, 1, rows, probs)[0]

    async def lookup_with_vector(self, scope: Scope,
                                 prompt: str) -> tuple[LookupResult, np.ndarray]:
        """`lookup`, embedding the prompt even when the namespace is empty, and returning
        the vector too: the gateway hands it to the classifier, so a request is embedded
        once. Embedding and verification run off the event loop, in the lookup worker's
        micro-batches when there is one."""
        ns = self.namespace(scope)
        if self.lookups is not None:
            result = await self.lookups.submit(ns, prompt)
            if result.vector is not None:
                return result, result.vector
        vector = (await self._embed(prompt)).reshape(1, -1)
        rows = self.candidates(ns, vector)
        probs = await asyncio.to_thread(self.verify, [prompt], vector, rows) if rows \
            else np.zeros(0)
        return self.decide(ns, 1, rows, probs)[0], vector[0]

    async def match_in_flight(self, scope: Scope, prompt: str, vector: np.ndarray,
                              in_flight: list[tuple[str, np.ndarray]]) -> InFlightMatch | None:
        """After a miss: which of `in_flight` (prompts of `scope` whose answers the caller
        is generating now, with their embeddings) `prompt` may wait for and share, by the
        same test as a hit; None when none passes. A match counts as a hit."""
        if not in_flight:
            return None
        ns = self.namespace(scope)
        prompts = [p for p, _ in in_flight]
        vectors = np.stack([np.asarray(v, dtype=np.float32) for _, v in in_flight])
        match = await asyncio.to_thread(
            self._decision.in_flight_match, ns, scope.tenant, prompt,
            np.asarray(vector, dtype=np.float32), prompts, vectors,
            self.config.similarity_floor)
        if match is not None:
            self.counters.hits += 1
        return match

    async def store(self, scope: Scope, prompt: str, answer: str, tier: str = "",
                    prompt_tokens: int = 0, completion_tokens: int = 0) -> Entry:
        """Cache `answer` for `prompt` in `scope`'s namespace; see `store_with_receipt`."""
        stored = await self.store_with_receipt(scope, prompt, answer, tier, prompt_tokens,
                                               completion_tokens)
        return stored.entry

    async def store_with_receipt(self, scope: Scope, prompt: str, answer: str, tier: str = "",
                                 prompt_tokens: int = 0, completion_tokens: int = 0) -> Stored:
        """Cache `answer` and log it; durable once the log acknowledged the store.

        The entry serves here at once (tentatively) and everywhere once the log
        orders it; if the log refuses the write, it is taken back and the error raised.
        """
        ns = self.namespace(scope)
        vector = await self._embed(prompt)
        now = self.clock()
        entry = Entry(id=uuid.uuid4().hex, namespace=ns, tenant=scope.tenant, prompt=prompt,
                      answer=answer, vector=vector, tier=tier, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, created=now, last_hit=now)
        if self.log is None:
            self._store.insert(entry, evict=True)
            return Stored(entry, durable=False)
        self._replica.show_tentatively(entry)
        try:
            seq = await self.log.append(Event("store", scope.tenant, ns, entry.id, entry))
        except BaseException:
            self._replica.take_back(entry.id)
            raise
        return Stored(entry, durable=seq is not None)

    async def invalidate_entry(self, tenant: str, entry_id: str) -> Invalidated:
        """Drop one entry of `tenant`; an id this replica does not hold for `tenant` is a
        no-op and is not logged."""
        entry = self._store.get(entry_id)
        if entry is None or entry.tenant != tenant:
            return Invalidated(0, durable=True)
        return await self._invalidate(Event("invalidate", tenant, entry.namespace, entry_id))

    async def invalidate_namespace(self, scope: Scope) -> Invalidated:
        """Drop every entry of `scope`'s namespace."""
        ns = namespace_of(scope, allow_sampling=True)
        return await self._invalidate(Event("invalidate", scope.tenant, namespace=ns))

    async def invalidate_tenant(self, tenant: str) -> Invalidated:
        """Drop every entry of `tenant`."""
        return await self._invalidate(Event("invalidate", tenant))

    def entry_ids(self) -> set[str]:
        """Ids of the entries this replica holds (to compare replicas)."""
        return set(self._store.where)

    def namespace_sizes(self) -> dict[str, int]:
        """Entries per namespace held here."""
        return self._store.sizes()

    async def settled(self) -> None:
        """Wait until the evictions this replica decided have been handed to the log."""
        if self.log is not None:
            await self.log.settled()

    def stats(self, tenant: str | None = None) -> Stats:
        """Counters (cache-wide) with entry and namespace counts (for `tenant` if given)."""
        return self._store.stats(tenant)

    # ---- the decision, in bulk (also used by evaluation) ------------------------------
    def lookup_vectors(self, ns: str, prompts: list[str], vectors: np.ndarray,
                       threshold: float | None = None) -> list[LookupResult]:
        """Lookups of already-embedded prompts in namespace `ns`, verified in this thread."""
        rows = self.candidates(ns, vectors)
        probs = self.verify(prompts, vectors, rows)
        return self.decide(ns, len(prompts), rows, probs, threshold)

    def candidates(self, ns: str, vectors: np.ndarray) -> list[Candidate]:
        """See `NamespaceStore.candidates`."""
        return self._store.candidates(ns, vectors)

    def verify(self, prompts: list[str], vectors: np.ndarray,
               rows: list[Candidate]) -> np.ndarray:
        """See `HitDecision.verify` (touches no cache state: may run in a worker thread)."""
        return self._decision.verify(prompts, vectors, rows)

    def decide(self, ns: str, n: int, rows: list[Candidate], probs: np.ndarray,
               threshold: float | None = None) -> list[LookupResult]:
        """See `HitDecision.decide`."""
        return self._decision.decide(ns, n, rows, probs, threshold)

    def nearest(self, ns: str, vectors: np.ndarray, k: int = 1) -> list[list[tuple[Entry, float]]]:
        """The `k` most similar entries of `ns` for each row, by cosine alone (no verifier)."""
        return self._store.nearest(ns, vectors, k)

    def index_kind(self, ns: str) -> str:
        """Which FAISS index serves `ns` ('flat', 'flat-gpu', 'hnsw'; '' if unknown)."""
        return self._store.index_kind(ns)

    def put(self, entry: Entry) -> list[Entry]:
        """Insert an entry made elsewhere (evaluation, benchmarks); returns evictions."""
        return self._store.insert(entry, evict=True)

    def expire(self) -> int:
        """Drop entries older than the TTL; returns how many."""
        return self._store.expire()

    # ---- internals -------------------------------------------------------------------
    async def _invalidate(self, event: Event) -> Invalidated:
        if self.log is None:
            return Invalidated(self._replica.remove(event), durable=False)
        predicted = len(self._replica.targets(event))
        self._replica.await_outcome(event.id)
        try:
            seq = await self.log.append(event)
            if seq is not None:
                await self.log.caught_up(seq)
            removed = self._replica.outcome(event.id)
        finally:
            self._replica.forget_outcome(event.id)
        return Invalidated(predicted if removed is None else removed, durable=seq is not None)
