"""The namespace store: entries per namespace, their FAISS index, LRU order, TTL.

It holds what a replica serves and knows nothing of the event log or the
verifier: inserting, removing, searching and expiring entries are its whole
job. The replica's ordering state (`cache.replica`) decides *when* entries go
in or out; the hit decision (`cache.decision`) reads candidates from here and
marks a hit entry as recently used.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from cache.entries import Entry
from cache.index import VectorIndex

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

    def restore(self, saved: Stats) -> None:
        """Put every counter back to `saved`'s value (in place: the parts share this one)."""
        for f in fields(self):
            setattr(self, f.name, getattr(saved, f.name))


@dataclass(frozen=True)
class StoreConfig:
    """How entries are kept and searched."""

    dim: int
    ttl_s: float = 86_400.0
    max_entries_per_namespace: int = 10_000
    hnsw_from: int = 20_000
    use_gpu: bool = True
    similarity_floor: float = 0.55
    top_k: int = 4
    rival_window: float = 0.1


@dataclass
class Namespace:
    """One namespace: its tenant, its index, its entries in LRU order."""

    tenant: str
    index: VectorIndex
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)  # LRU order
    by_key: dict[int, str] = field(default_factory=dict)


class NamespaceStore:
    """Namespaced entries with FAISS search, LRU eviction and TTL expiry."""

    def __init__(self, config: StoreConfig, counters: Stats,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.counters = counters
        self.clock = clock
        self.spaces: dict[str, Namespace] = {}
        self.where: dict[str, str] = {}  # entry id -> namespace
        self._keys = itertools.count(1)

    # ---- reading ----------------------------------------------------------------------
    def get(self, entry_id: str) -> Entry | None:
        """The entry with this id, if held."""
        ns = self.where.get(entry_id)
        return None if ns is None else self.spaces[ns].entries[entry_id]

    def holds(self, ns: str, entry_id: str) -> bool:
        """Whether `ns` still holds `entry_id`."""
        space = self.spaces.get(ns)
        return space is not None and entry_id in space.entries

    def candidates(self, ns: str, vectors: np.ndarray) -> list[Candidate]:
        """FAISS's `top_k` nearest live entries above the floor and within `rival_window`
        cosine of the query's nearest, per query row (cheap). The window keeps the
        verifier's work to the nearest entry and its close rivals: a candidate far below
        the nearest is neither a likely answer nor a rival worth a cross-encoder pass."""
        space = self.spaces.get(ns)
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
                    self.remove_entry(entry.id)
                    self.counters.expirations += 1
                    continue
                rows.append((qi, entry, sim))
        return rows

    def nearest(self, ns: str, vectors: np.ndarray, k: int = 1) -> list[list[tuple[Entry, float]]]:
        """The `k` most similar entries of `ns` for each row, by cosine alone (no verifier)."""
        space = self.spaces.get(ns)
        if space is None:
            return [[] for _ in range(len(vectors))]
        return [[(space.entries[space.by_key[key]], sim) for key, sim in row]
                for row in space.index.search_many(vectors, k)]

    def index_kind(self, ns: str) -> str:
        """Which FAISS index serves `ns` ('flat', 'flat-gpu', 'hnsw'; '' if unknown)."""
        space = self.spaces.get(ns)
        return space.index.kind if space else ""

    def sizes(self) -> dict[str, int]:
        """Entries per namespace."""
        return {ns: len(space.entries) for ns, space in self.spaces.items()}

    def stats(self, tenant: str | None = None) -> Stats:
        """Counters with entry and namespace counts (for `tenant` if given)."""
        spaces = [s for s in self.spaces.values() if tenant in (None, "", s.tenant)]
        c = self.counters
        return Stats(entries=sum(len(s.entries) for s in spaces), namespaces=len(spaces),
                     lookups=c.lookups, hits=c.hits, guard_rejections=c.guard_rejections,
                     evictions=c.evictions, expirations=c.expirations)

    def touch(self, ns: str, entry: Entry) -> None:
        """Mark `entry` (held in `ns`) as just hit: most recently used."""
        entry.last_hit, entry.hit_count = self.clock(), entry.hit_count + 1
        self.spaces[ns].entries.move_to_end(entry.id)

    # ---- writing ----------------------------------------------------------------------
    def insert(self, entry: Entry, evict: bool) -> list[Entry]:
        """Add `entry`; with `evict` (no log: one replica) drop LRU entries past the cap."""
        space = self.spaces.get(entry.namespace)
        if space is None:
            space = Namespace(entry.tenant, VectorIndex(
                self.config.dim, hnsw_from=self.config.hnsw_from, use_gpu=self.config.use_gpu))
            self.spaces[entry.namespace] = space
        entry.key = next(self._keys)
        space.entries[entry.id] = entry
        space.by_key[entry.key] = entry.id
        self.where[entry.id] = entry.namespace
        space.index.add(np.array([entry.key]), entry.vector.reshape(1, -1))
        evicted: list[Entry] = []
        while evict and len(space.entries) > self.config.max_entries_per_namespace:
            _, oldest = next(iter(space.entries.items()))
            self.remove_entry(oldest.id)
            evicted.append(oldest)
        self.counters.evictions += len(evicted)
        return evicted

    def remove_ids(self, ids: list[str]) -> int:
        """Remove entries; a namespace that loses all of them is dropped whole (fast)."""
        by_ns: dict[str, list[str]] = {}
        for entry_id in ids:
            by_ns.setdefault(self.where[entry_id], []).append(entry_id)
        for ns, gone in by_ns.items():
            if len(gone) == len(self.spaces[ns].entries):
                self._remove_namespace(ns)
            else:
                for entry_id in gone:
                    self.remove_entry(entry_id)
        return len(ids)

    def remove_entry(self, entry_id: str) -> int:
        """Remove one entry (0 if not held)."""
        ns = self.where.pop(entry_id, None)
        if ns is None:
            return 0
        space = self.spaces[ns]
        entry = space.entries.pop(entry_id)
        del space.by_key[entry.key]
        space.index.remove([entry.key])
        if not space.entries:
            del self.spaces[ns]
        return 1

    def expire(self) -> int:
        """Drop entries older than the TTL; returns how many."""
        now = self.clock()
        old = [e.id for s in self.spaces.values() for e in s.entries.values()
               if now - e.created > self.config.ttl_s]
        for entry_id in old:
            self.remove_entry(entry_id)
        self.counters.expirations += len(old)
        return len(old)

    def _remove_namespace(self, ns: str) -> int:
        space = self.spaces.pop(ns, None)
        if space is None:
            return 0
        for entry_id in space.entries:
            self.where.pop(entry_id, None)
        return len(space.entries)
