"""Replay a pair file through the cache, as `cmesh cache eval` and calibration do.

Every distinct cached prompt (`a`) is inserted into one namespace, then every
query (`b`) is looked up. A hit is right when it returns that pair's own `a`
and the pair is labelled a duplicate, or when it returns a cached prompt
whose words are the query's own words (case, spacing and punctuation aside): QQP repeats
questions across pairs, and an exact repeat answered from the cache is
right by any reading. Every other hit is wrong. `strict_*` counts the
literal rule (own `a` only) beside it, so both are visible. Static
cosine thresholds on the same embeddings and index are measured beside the
verifier, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cache.core import CacheConfig, SemanticCache, Verifier
from cache.entries import Entry
from cache.features import same_text
from cache.pairs import Pair

STATIC_THRESHOLDS = (0.95, 0.9, 0.85, 0.8)


@dataclass
class Outcomes:
    """Per query: best-verified candidate, top cosine candidate, and whether each is right."""

    n_positive: int
    prob: np.ndarray  # best verifier probability, -1 when no candidate above the floor
    prob_right: np.ndarray  # whether that candidate is the right answer
    top_sim: np.ndarray  # cosine of the nearest cached prompt
    top_right: np.ndarray
    prob_strict: np.ndarray  # the literal rule: own `a` and label 1 only




def collect(pairs: Sequence[Pair], encode: Callable[[list[str]], np.ndarray],
            verifier: Verifier, config: CacheConfig | None = None,
            batch: int = 512) -> Outcomes:
    """Run `pairs` through a fresh cache and record every query's candidates."""
    cached = sorted({p.a for p in pairs})
    config = config or CacheConfig()
    config = CacheConfig(**{**config.__dict__, "max_entries_per_namespace": len(cached) + 1,
                            "ttl_s": float("inf")})

    async def no_embed(_: str) -> np.ndarray:  # pragma: no cover - never called
        raise RuntimeError("evaluation embeds in bulk")

    vectors = encode(cached)
    cache = SemanticCache(no_embed, verifier, vectors.shape[1], config, clock=lambda: 0.0)
    for i, (text, vec) in enumerate(zip(cached, vectors, strict=True)):
        entry = Entry(id=f"e{i}", namespace="eval", tenant="eval", prompt=text, answer=text,
                      vector=vec)
        cache.put(entry)
    n = len(pairs)
    prob = np.full(n, -1.0)
    prob_right = np.zeros(n, dtype=bool)
    top_sim = np.full(n, -1.0)
    top_right = np.zeros(n, dtype=bool)
    prob_strict = np.zeros(n, dtype=bool)
    for start in range(0, n, batch):
        chunk = pairs[start : start + batch]
        qv = encode([p.b for p in chunk])
        results = cache.lookup_vectors("eval", [p.b for p in chunk], qv, threshold=2.0)
        nearest = cache.nearest("eval", qv, 1)
        for j, (pair, res, near) in enumerate(zip(chunk, results, nearest, strict=True)):
            i = start + j
            if res.candidate is not None:
                prob[i] = res.probability
                prob_strict[i] = bool(pair.label) and res.candidate.prompt == pair.a
                prob_right[i] = prob_strict[i] or same_text(res.candidate.prompt, pair.b)
            if near:
                top_sim[i] = near[0][1]
                top_right[i] = (bool(pair.label) and near[0][0].prompt == pair.a) or same_text(
                    near[0][0].prompt, pair.b)
    return Outcomes(sum(p.label for p in pairs), prob, prob_right, top_sim, top_right,
                    prob_strict)


def figures(scores: np.ndarray, right: np.ndarray, bound: float, n_positive: int) -> dict:
    """hits, wrong hits, misses, wrong share and recall at one bound."""
    hit = scores >= bound
    hits, good = int(hit.sum()), int((hit & right).sum())
    return {"n": len(scores), "hits": hits, "correct_hits": good, "wrong_hits": hits - good,
            "misses": len(scores) - hits, "wrong_share": (hits - good) / hits if hits else 0.0,
            "recall": good / n_positive if n_positive else 0.0}
