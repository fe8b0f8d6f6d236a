"""The semantic cache: namespaces of entries, FAISS search, verifier-guarded hits.

A lookup embeds the prompt, takes the namespace's nearest entries above a
loose similarity floor, and asks the verifier whether each one is the same
question with the same answer. Only a verifier probability at or above the
bound derived from the operator's target wrong-hit rate δ makes a hit; the
similarity floor only saves verifier work. Every store, eviction and
invalidation is applied here and written to the `EntryLog`; replicas apply
the log's events through `apply`, so all replicas converge.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cache.calibration import Bound
from cache.entries import Entry, Event
from cache.index import VectorIndex
from cache.keys import Scope, namespace_of


class EntryLog(Protocol):
    """Where events go so that other replicas (and restarts) see them."""

    async def append(self, event: Event) -> None:
        """Record `event`; never raises (a log that is down buffers)."""


class LookupQueue(Protocol):
    """Where `lookup` sends work when a lookup worker serves this cache."""

    async def submit(self, ns: str, prompt: str) -> LookupResult:
        """The lookup of `prompt` in namespace `ns`."""


class Verifier(Protocol):
    """Judges whether a cached prompt answers a new one."""

    def probabilities(self, queries: list[str], query_vecs: np.ndarray,
                      candidates: list[str], candidate_vecs: np.ndarray,
                      sims: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Calibrated P(a hit on this candidate is right) for each (query, candidate) row.

        `groups[i]` says which lookup row i belongs to, so a candidate can be
        judged against its rivals: two near-equal cached prompts make either
        hit a guess.
        """

    def bound(self, delta: float) -> Bound:
        """The probability a hit needs for a wrong-hit share of at most `delta`, with the
        hit and wrong-hit rates calibration expects from it."""


@dataclass(frozen=True)
class CacheConfig:
    """The domain knobs (the service fills these from its settings)."""

    delta: float = 0.02
    similarity_floor: float = 0.55
    top_k: int = 4
    ttl_s: float = 86_400.0
    max_entries_per_namespace: int = 10_000
    hnsw_from: int = 20_000
    allow_sampling: bool = False
    use_gpu: bool = True


@dataclass
class LookupResult:
    """A lookup's outcome; `entry` is set only on a hit."""

    hit: bool
    namespace: str
    entry: Entry | None = None
    similarity: float = 0.0
    probability: float = 0.0
    candidate: Entry | None = None


Candidate = tuple[int, Entry, float]  # (query row, cached entry, cosine)


@dataclass
class Stats:
    """Counters since start, plus current sizes."""

    entries: int = 0
    namespaces: int = 0
    lookups: int = 0
    hits: int = 0
    guard_rejections: int = 0
    evictions: int = 0
    expirations: int = 0


@dataclass
class _Namespace:
    tenant: str
    index: VectorIndex
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)  # LRU order
    by_key: dict[int, str] = field(default_factory=dict)


class SemanticCache:
    """Namespaced, verifier-guarded semantic cache; transport-free."""

    def __init__(self, embed: Callable[[str], Awaitable[np.ndarray]], verifier: Verifier,
                 dim: int, config: CacheConfig | None = None, log: EntryLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or CacheConfig()
        self._embed = embed
        self.verifier = verifier
        self.dim = dim
        self.log = log
        self.clock = clock
        self._spaces: dict[str, _Namespace] = {}
        self._where: dict[str, str] = {}  # entry id -> namespace
        self._seen: set[str] = set()  # ids ever applied: a late echo never resurrects one
        self._keys = itertools.count(1)
        self.counters = Stats()
        self.bound = verifier.bound(self.config.delta)
        self.threshold = self.bound.threshold
        self.lookups: LookupQueue | None = None  # set by `cache.lookup.LookupWorker`

    # ---- public async surface -------------------------------------------------------
    def namespace(self, scope: Scope) -> str:
        """The namespace of `scope` (raises `Uncacheable` per settings)."""
        return namespace_of(scope, self.config.allow_sampling)

    async def lookup(self, scope: Scope, prompt: str) -> LookupResult:
        """Find a verified answer for `prompt` in `scope`'s namespace."""
        ns = self.namespace(scope)
        if ns not in self._spaces:
            self.counters.lookups += 1
            return LookupResult(hit=False, namespace=ns)
        if self.lookups is not None:  # embed + verify micro-batched in the lookup worker
            return await self.lookups.submit(ns, prompt)
        vector = (await self._embed(prompt)).reshape(1, -1)
        rows = self.candidates(ns, vector)
        probs = await asyncio.to_thread(self.verify, [prompt], vector, rows)
        return self.decide(ns, 1, rows, probs)[0]

    async def store(self, scope: Scope, prompt: str, answer: str, tier: str = "",
                    prompt_tokens: int = 0, completion_tokens: int = 0) -> Entry:
        """Cache `answer` for `prompt` in `scope`'s namespace and log it."""
        ns = self.namespace(scope)
        vector = await self._embed(prompt)
        now = self.clock()
        entry = Entry(id=uuid.uuid4().hex, namespace=ns, tenant=scope.tenant, prompt=prompt,
                      answer=answer, vector=vector, tier=tier, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, created=now, last_hit=now)
        evicted = self._insert(entry)
        await self._append(Event("store", scope.tenant, ns, entry.id, entry))
        for old in evicted:
            await self._append(Event("evict", old.tenant, old.namespace, old.id))
        return entry

    async def invalidate_entry(self, tenant: str, entry_id: str) -> int:
        """Drop one entry of `tenant`; returns how many were removed (0 or 1)."""
        ns = self._where.get(entry_id)
        if ns is not None and self._spaces[ns].tenant != tenant:
            return 0
        removed = self._remove_entry(entry_id)
        await self._append(Event("invalidate", tenant, entry_id=entry_id))
        return removed

    async def invalidate_namespace(self, scope: Scope) -> int:
        """Drop every entry of `scope`'s namespace."""
        ns = namespace_of(scope, allow_sampling=True)
        removed = self._remove_namespace(ns)
        await self._append(Event("invalidate", scope.tenant, namespace=ns))
        return removed

    async def invalidate_tenant(self, tenant: str) -> int:
        """Drop every entry of `tenant`."""
        removed = self._remove_tenant(tenant)
        await self._append(Event("invalidate", tenant))
        return removed

    def stats(self, tenant: str | None = None) -> Stats:
        """Counters (cache-wide) with entry and namespace counts (for `tenant` if given)."""
        spaces = [s for s in self._spaces.values() if tenant in (None, "", s.tenant)]
        c = self.counters
        return Stats(entries=sum(len(s.entries) for s in spaces), namespaces=len(spaces),
                     lookups=c.lookups, hits=c.hits, guard_rejections=c.guard_rejections,
                     evictions=c.evictions, expirations=c.expirations)

    # ---- the decision, in bulk (also used by evaluation) ------------------------------
    def lookup_vectors(self, ns: str, prompts: list[str], vectors: np.ndarray,
                       threshold: float | None = None) -> list[LookupResult]:
        """Lookups of already-embedded prompts in namespace `ns`, verified in this thread."""
        rows = self.candidates(ns, vectors)
        probs = self.verify(prompts, vectors, rows)
        return self.decide(ns, len(prompts), rows, probs, threshold)

    def candidates(self, ns: str, vectors: np.ndarray) -> list[Candidate]:
        """FAISS's `top_k` nearest live entries above the floor, per query row (cheap)."""
        space = self._spaces.get(ns)
        if space is None:
            return []
        now = self.clock()
        rows: list[Candidate] = []
        for qi, found in enumerate(space.index.search_many(vectors, self.config.top_k)):
            for key, sim in found:
                entry = space.entries.get(space.by_key.get(key, ""))
                if entry is None or sim < self.config.similarity_floor:
                    continue
                if now - entry.created > self.config.ttl_s:
                    self._remove_entry(entry.id)
                    self.counters.expirations += 1
                    continue
                rows.append((qi, entry, sim))
        return rows

    def verify(self, prompts: list[str], vectors: np.ndarray,
               rows: list[Candidate]) -> np.ndarray:
        """The verifier's probability for each candidate row (the costly step; touches no
        cache state, so it may run in a worker thread)."""
        if not rows:
            return np.zeros(0)
        groups = np.array([qi for qi, _, _ in rows])
        return self.verifier.probabilities(
            [prompts[qi] for qi, _, _ in rows], vectors[groups],
            [e.prompt for _, e, _ in rows], np.stack([e.vector for _, e, _ in rows]),
            np.array([sim for _, _, sim in rows]), groups)

    def decide(self, ns: str, n: int, rows: list[Candidate], probs: np.ndarray,
               threshold: float | None = None) -> list[LookupResult]:
        """Each query's best-verified candidate, a hit if it reaches the bound and its entry
        is still cached (an entry removed while it was being verified never hits)."""
        bound = self.threshold if threshold is None else threshold
        self.counters.lookups += n
        results = [LookupResult(hit=False, namespace=ns) for _ in range(n)]
        for (qi, entry, sim), p in zip(rows, np.asarray(probs).tolist(), strict=True):
            if p > results[qi].probability or results[qi].candidate is None:
                results[qi] = LookupResult(False, ns, None, sim, p, entry)
        space = self._spaces.get(ns)
        now = self.clock()
        for r in results:
            if r.candidate is None:
                continue
            live = space is not None and r.candidate.id in space.entries
            if live and r.probability >= bound:
                assert space is not None
                r.hit, r.entry = True, r.candidate
                r.entry.last_hit, r.entry.hit_count = now, r.entry.hit_count + 1
                space.entries.move_to_end(r.entry.id)
                self.counters.hits += 1
            else:
                self.counters.guard_rejections += 1
        return results

    def nearest(self, ns: str, vectors: np.ndarray, k: int = 1) -> list[list[tuple[Entry, float]]]:
        """The `k` most similar entries of `ns` for each row, by cosine alone (no verifier)."""
        space = self._spaces.get(ns)
        if space is None:
            return [[] for _ in range(len(vectors))]
        return [[(space.entries[space.by_key[key]], sim) for key, sim in row]
                for row in space.index.search_many(vectors, k)]

    def index_kind(self, ns: str) -> str:
        """Which FAISS index serves `ns` ('flat', 'flat-gpu', 'hnsw'; '' if unknown)."""
        space = self._spaces.get(ns)
        return space.index.kind if space else ""

    def put(self, entry: Entry) -> list[Entry]:
        """Insert an entry made elsewhere (evaluation, benchmarks); returns evictions."""
        return self._insert(entry)

    # ---- applying the log ----------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Apply an event from the log (replay or follow); idempotent."""
        if event.op == "store" and event.entry is not None:
            if event.entry.id in self._seen:
                return
            if self.clock() - event.entry.created <= self.config.ttl_s:
                self._insert(event.entry, count=False)  # evictions count where the store was made
        elif event.op == "evict":
            self._seen.add(event.entry_id)
            self._remove_entry(event.entry_id)
        elif event.op == "invalidate":
            if event.entry_id:
                self._seen.add(event.entry_id)
                self._remove_entry(event.entry_id)
            elif event.namespace:
                self._remove_namespace(event.namespace)
            else:
                self._remove_tenant(event.tenant)

    def expire(self) -> int:
        """Drop entries older than the TTL; returns how many."""
        now = self.clock()
        old = [e.id for s in self._spaces.values() for e in s.entries.values()
               if now - e.created > self.config.ttl_s]
        for entry_id in old:
            self._remove_entry(entry_id)
        self.counters.expirations += len(old)
        return len(old)

    # ---- internals -------------------------------------------------------------------
    async def _append(self, event: Event) -> None:
        if self.log is not None:
            await self.log.append(event)

    def _insert(self, entry: Entry, count: bool = True) -> list[Entry]:
        self._seen.add(entry.id)
        space = self._spaces.get(entry.namespace)
        if space is None:
            space = _Namespace(entry.tenant, VectorIndex(
                self.dim, hnsw_from=self.config.hnsw_from, use_gpu=self.config.use_gpu))
            self._spaces[entry.namespace] = space
        entry.key = next(self._keys)
        space.entries[entry.id] = entry
        space.by_key[entry.key] = entry.id
        self._where[entry.id] = entry.namespace
        space.index.add(np.array([entry.key]), entry.vector.reshape(1, -1))
        evicted = []
        while len(space.entries) > self.config.max_entries_per_namespace:
            _, oldest = next(iter(space.entries.items()))
            self._remove_entry(oldest.id)
            evicted.append(oldest)
        if count:
            self.counters.evictions += len(evicted)
        return evicted

    def _remove_entry(self, entry_id: str) -> int:
        ns = self._where.pop(entry_id, None)
        if ns is None:
            return 0
        space = self._spaces[ns]
        entry = space.entries.pop(entry_id)
        del space.by_key[entry.key]
        space.index.remove([entry.key])
        if not space.entries:
            del self._spaces[ns]
        return 1

    def _remove_namespace(self, ns: str) -> int:
        space = self._spaces.pop(ns, None)
        if space is None:
            return 0
        for entry_id in space.entries:
            self._where.pop(entry_id, None)
        return len(space.entries)

    def _remove_tenant(self, tenant: str) -> int:
        return sum(self._remove_namespace(ns) for ns, s in list(self._spaces.items())
                   if s.tenant == tenant)
