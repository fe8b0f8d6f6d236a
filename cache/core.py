"""The semantic cache: namespaces of entries, FAISS search, verifier-guarded hits.

A lookup embeds the prompt, takes the namespace's nearest entries above a
loose similarity floor, and asks the verifier whether each one is the same
question with the same answer. Only a verifier probability at or above the
bound derived from the operator's target wrong-hit rate δ makes a hit; the
similarity floor only saves verifier work.

Writes go through the `EntryLog` and change the entries only when the log
hands them back in its one order (`apply`), the writer's own included, so
every replica holds what one replica fed the stream in order would hold. A
store is shown here at once as *tentative* (read-your-writes); an
invalidation or eviction applied before its own store comes back leaves it
alone, because the log ordered that change first. Evictions are decided once,
by the replica whose store overfilled the namespace, and logged as events;
invalidations carry their tenant and remove only that tenant's entries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
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

log = logging.getLogger(__name__)


class EntryLog(Protocol):
    """Where events go so that other replicas (and restarts) see them, in one order."""

    async def append(self, event: Event) -> int | None:
        """Record `event`: its sequence once durable, None if only buffered (not durable).

        Raises a domain error (unavailable, overloaded) when it cannot take it."""

    async def caught_up(self, seq: int) -> bool:
        """Wait until this replica has applied everything through `seq`."""


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
    rival_window: float = 0.1
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
    vector: np.ndarray | None = None  # the prompt's embedding, when the lookup worker made it


Candidate = tuple[int, Entry, float]  # (query row, cached entry, cosine)


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
        self._tentative: set[str] = set()  # own stores the log has not handed back yet
        self._evicting: set[str] = set()  # evictions decided here, not yet applied
        self._outcomes: dict[str, int | None] = {}  # own invalidations: removed on apply
        self._background: set[asyncio.Task[None]] = set()
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
            self._insert(entry, evict=True)
            return Stored(entry, durable=False)
        self._tentative.add(entry.id)
        self._insert(entry, evict=False)
        try:
            seq = await self.log.append(Event("store", scope.tenant, ns, entry.id, entry))
        except BaseException:
            if entry.id in self._tentative:
                self._tentative.discard(entry.id)
                self._remove_entry(entry.id)
            raise
        return Stored(entry, durable=seq is not None)

    async def invalidate_entry(self, tenant: str, entry_id: str) -> Invalidated:
        """Drop one entry of `tenant`; an id this replica does not hold for `tenant` is a
        no-op and is not logged."""
        ns = self._where.get(entry_id)
        if ns is None or self._spaces[ns].entries[entry_id].tenant != tenant:
            return Invalidated(0, durable=True)
        return await self._invalidate(Event("invalidate", tenant, ns, entry_id))

    async def invalidate_namespace(self, scope: Scope) -> Invalidated:
        """Drop every entry of `scope`'s namespace."""
        ns = namespace_of(scope, allow_sampling=True)
        return await self._invalidate(Event("invalidate", scope.tenant, namespace=ns))

    async def invalidate_tenant(self, tenant: str) -> Invalidated:
        """Drop every entry of `tenant`."""
        return await self._invalidate(Event("invalidate", tenant))

    def entry_ids(self) -> set[str]:
        """Ids of the entries this replica holds (to compare replicas)."""
        return set(self._where)

    def namespace_sizes(self) -> dict[str, int]:
        """Entries per namespace held here."""
        return {ns: len(space.entries) for ns, space in self._spaces.items()}

    async def settled(self) -> None:
        """Wait until the evictions this replica decided have been handed to the log."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

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
        """FAISS's `top_k` nearest live entries above the floor and within `rival_window`
        cosine of the query's nearest, per query row (cheap). The window keeps the
        verifier's work to the nearest entry and its close rivals: a candidate far below
        the nearest is neither a likely answer nor a rival worth a cross-encoder pass."""
        space = self._spaces.get(ns)
        if space is None:
            return []
        now = self.clock()
        rows: list[Candidate] = []
        for qi, found in enumerate(space.index.search_many(vectors, self.config.top_k)):
            best = max((sim for _, sim in found), default=0.0)
            for key, sim in found:
                entry = space.entries.get(space.by_key.get(key, ""))
                if entry is None or sim < max(self.config.similarity_floor,
                                              best - self.config.rival_window):
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
        return self._insert(entry, evict=True)

    # ---- applying the log ----------------------------------------------------------
    def apply(self, event: Event) -> int:
        """Apply the log's next event (replay or follow); returns entries added or removed.

        Only the log calls this, in its order. A store already held is not added
        again; an eviction or invalidation removes only entries of its own tenant
        and spares this replica's tentative stores (the log ordered them later).
        """
        if event.op == "store":
            return self._apply_store(event)
        if event.op == "evict":
            self._evicting.discard(event.entry_id)
        removed = self._remove_ids(self._targets(event))
        if event.id in self._outcomes:
            self._outcomes[event.id] = removed
        return removed

    def withdraw(self, event: Event) -> None:
        """The log gave up on an event this replica appended: forget its local traces
        (a tentative store that will never be ordered, an eviction that will not happen)."""
        if event.op == "store" and event.entry_id in self._tentative:
            self._tentative.discard(event.entry_id)
            self._remove_entry(event.entry_id)
        elif event.op == "evict":
            self._evicting.discard(event.entry_id)

    def _apply_store(self, event: Event) -> int:
        entry = event.entry
        if entry is None:
            raise ValueError(f"store event {event.id} without an entry")
        if not entry.namespace.startswith(f"{entry.tenant}/"):  # no planting in another's
            raise ValueError(f"store event {event.id}: namespace {entry.namespace!r} is not "
                             f"tenant {entry.tenant!r}'s")
        if entry.id in self._tentative:  # our own store, now in its place in the order
            self._tentative.discard(entry.id)
            if entry.id in self._where:
                self._decide_evictions(entry.namespace)
            return 0
        if entry.id in self._where or self.clock() - entry.created > self.config.ttl_s:
            return 0
        self._insert(entry, evict=False)
        return 1

    def _targets(self, event: Event) -> list[str]:
        """The committed entries an eviction or invalidation removes, tenant checked."""
        if event.entry_id:
            ns = self._where.get(event.entry_id)
            if ns is None or event.entry_id in self._tentative:
                return []
            entry = self._spaces[ns].entries[event.entry_id]
            return [entry.id] if entry.tenant == event.tenant else []
        if event.namespace:
            spaces = [self._spaces[event.namespace]] if event.namespace in self._spaces else []
        else:
            spaces = list(self._spaces.values())
        return [e.id for s in spaces if s.tenant == event.tenant
                for e in s.entries.values() if e.id not in self._tentative]

    def _decide_evictions(self, ns: str) -> None:
        """Our store overfilled `ns`: pick LRU victims once and log them for everyone."""
        space = self._spaces.get(ns)
        if space is None or self.log is None:
            return
        committed = [e for e in space.entries.values() if e.id not in self._tentative]
        pending = sum(1 for e in committed if e.id in self._evicting)
        over = len(committed) - pending - self.config.max_entries_per_namespace
        victims = [e for e in committed if e.id not in self._evicting][:max(over, 0)]
        if not victims:
            return
        self.counters.evictions += len(victims)
        self._evicting.update(e.id for e in victims)
        task = asyncio.get_running_loop().create_task(self._log_evictions(victims))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _log_evictions(self, victims: list[Entry]) -> None:
        assert self.log is not None
        for old in victims:
            event = Event("evict", old.tenant, old.namespace, old.id)
            try:
                await self.log.append(event)
            except Exception as exc:  # a later store in this namespace decides again
                self._evicting.discard(old.id)
                log.warning("eviction not logged (%s): %s %s", exc, event.op, event.entry_id)

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
    async def _invalidate(self, event: Event) -> Invalidated:
        if self.log is None:
            return Invalidated(self.apply(event), durable=False)
        predicted = len(self._targets(event))
        self._outcomes[event.id] = None
        try:
            seq = await self.log.append(event)
            if seq is not None:
                await self.log.caught_up(seq)
            removed = self._outcomes[event.id]
        finally:
            self._outcomes.pop(event.id, None)
        return Invalidated(predicted if removed is None else removed, durable=seq is not None)

    def _insert(self, entry: Entry, evict: bool) -> list[Entry]:
        """Add `entry`; with `evict` (no log: one replica) drop LRU entries past the cap."""
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
        evicted: list[Entry] = []
        while evict and len(space.entries) > self.config.max_entries_per_namespace:
            _, oldest = next(iter(space.entries.items()))
            self._remove_entry(oldest.id)
            evicted.append(oldest)
        self.counters.evictions += len(evicted)
        return evicted

    def _remove_ids(self, ids: list[str]) -> int:
        """Remove entries; a namespace that loses all of them is dropped whole (fast)."""
        by_ns: dict[str, list[str]] = {}
        for entry_id in ids:
            by_ns.setdefault(self._where[entry_id], []).append(entry_id)
        for ns, gone in by_ns.items():
            if len(gone) == len(self._spaces[ns].entries):
                self._remove_namespace(ns)
            else:
                for entry_id in gone:
                    self._remove_entry(entry_id)
        return len(ids)

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
