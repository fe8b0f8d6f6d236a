"""The hit decision: the verifier's probability per candidate, against δ's bound.

Only a verifier probability at or above the bound derived from the operator's
target wrong-hit share δ makes a hit; the store's similarity floor only saves
verifier work. A candidate removed while it was being verified never hits. A
tenant whose audited hits broke the promise needs the tightened bound its
`AuditBook` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from cache.audit import AuditBook
from cache.calibration import Bound
from cache.entries import Entry
from cache.store import Candidate, NamespaceStore, Stats


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
class InFlightMatch:
    """Which prompt being answered now a new prompt may wait for: an index into the
    prompts the caller gave, with that pair's cosine and verifier probability."""

    index: int
    similarity: float
    probability: float


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


class HitDecision:
    """Verifies candidates and turns probabilities into hits at δ's bound."""

    def __init__(self, verifier: Verifier, delta: float, store: NamespaceStore,
                 counters: Stats, audit: AuditBook) -> None:
        self.verifier = verifier
        self.store = store
        self.counters = counters
        self.bound = verifier.bound(delta)
        self.threshold = self.bound.threshold
        self.audit = audit

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
        self.counters.lookups += n
        results = [LookupResult(hit=False, namespace=ns) for _ in range(n)]
        for (qi, entry, sim), p in zip(rows, np.asarray(probs).tolist(), strict=True):
            if p > results[qi].probability or results[qi].candidate is None:
                results[qi] = LookupResult(False, ns, None, sim, p, entry)
        for r in results:
            if r.candidate is None:
                continue
            bound = self.audit.threshold(r.candidate.tenant) if threshold is None \
                else threshold
            if self.store.holds(ns, r.candidate.id) and r.probability >= bound:
                r.hit, r.entry = True, r.candidate
                self.store.touch(ns, r.entry)
                self.counters.hits += 1
            else:
                self.counters.guard_rejections += 1
        return results

    def in_flight_match(self, ns: str, tenant: str, prompt: str, vector: np.ndarray,
                        prompts: list[str], vectors: np.ndarray,
                        floor: float) -> InFlightMatch | None:
        """The prompt of `prompts` (answers being generated now, in namespace `ns`; their
        float32 embeddings the rows of `vectors`) that `prompt` may share an answer with:
        the best-verified one above the similarity `floor` when it reaches the bound
        `tenant` needs, else None. The same test as a hit on a stored entry (verifier,
        rules, δ's bound); touches no cache state."""
        sims = vectors @ vector
        kept = [i for i in range(len(prompts)) if sims[i] >= floor]
        if not kept:
            return None
        rows: list[Candidate] = [
            (0, Entry(id=f"in-flight-{i}", namespace=ns, tenant=tenant, prompt=prompts[i],
                      answer="", vector=vectors[i]), float(sims[i])) for i in kept]
        probs = self.verify([prompt], vector.reshape(1, -1), rows)
        best = int(np.argmax(probs))
        if float(probs[best]) < self.audit.threshold(tenant):
            return None
        return InFlightMatch(kept[best], rows[best][2], float(probs[best]))
