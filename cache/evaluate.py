"""Replay a pair file through the cache, as `cmesh cache eval` and calibration do.

Every distinct cached prompt (`a`) is inserted into one namespace, then every
query (`b`) is looked up, as the cache serves (FAISS top-k above the floor,
verifier on each candidate, best candidate kept). Whether a hit is right is
`cache.pairs.Scorer`'s call: the query's own text, or a prompt of its
duplicate cluster. Static cosine thresholds on the same embeddings and index
are measured beside the verifier, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cache.calibration import Outcomes
from cache.core import CacheConfig, SemanticCache, Verifier
from cache.entries import Entry
from cache.pairs import Pair, Scorer, normalise

STATIC_THRESHOLDS = (0.95, 0.9, 0.85, 0.8)
Encode = Callable[[list[str]], np.ndarray]


@dataclass
class Replay:
    """Per query: best-verified candidate and nearest-by-cosine candidate, each right or not."""

    pairs: Sequence[Pair]
    prob: np.ndarray  # best verifier probability, -1 when no candidate above the floor
    right: np.ndarray  # whether a hit on that candidate is right
    top_sim: np.ndarray  # cosine of the nearest cached prompt
    top_right: np.ndarray
    answerable: np.ndarray  # a right answer is in the cache (label 1, or own text cached)

    def outcomes(self, source: str) -> Outcomes:
        """The calibration outcomes of this replay."""
        return Outcomes(self.prob, self.right, int(self.answerable.sum()), source)


def replay(pairs: Sequence[Pair], encode: Encode, verifier: Verifier, scorer: Scorer,
           config: CacheConfig | None = None, batch: int = 256) -> Replay:
    """Run `pairs` through a fresh cache and record every query's outcome."""
    cached = sorted({p.a for p in pairs})
    cached_norm = {normalise(t) for t in cached}
    config = config or CacheConfig()
    config = CacheConfig(**{**config.__dict__, "max_entries_per_namespace": len(cached) + 1,
                            "ttl_s": float("inf"), "use_gpu": False})

    async def no_embed(_: str) -> np.ndarray:  # pragma: no cover - never called
        raise RuntimeError("evaluation embeds in bulk")

    vectors = encode(cached)
    cache = SemanticCache.build(no_embed, verifier, vectors.shape[1], config, clock=lambda: 0.0)
    for i, (text, vec) in enumerate(zip(cached, vectors, strict=True)):
        cache.put(Entry(id=f"e{i}", namespace="eval", tenant="eval", prompt=text, answer=text,
                        vector=vec))
    n = len(pairs)
    prob, right = np.full(n, -1.0), np.zeros(n, dtype=bool)
    top_sim, top_right = np.full(n, -1.0), np.zeros(n, dtype=bool)
    for start in range(0, n, batch):
        chunk = pairs[start : start + batch]
        qv = encode([p.b for p in chunk])
        results = cache.lookup_vectors("eval", [p.b for p in chunk], qv, threshold=2.0)
        nearest = cache.nearest("eval", qv, 1)
        for j, (pair, res, near) in enumerate(zip(chunk, results, nearest, strict=True)):
            if res.candidate is not None:
                prob[start + j] = res.probability
                right[start + j] = scorer.right(pair.b, res.candidate.prompt)
            if near:
                top_sim[start + j] = near[0][1]
                top_right[start + j] = scorer.right(pair.b, near[0][0].prompt)
    answerable = np.array([p.label == 1 or normalise(p.b) in cached_norm for p in pairs])
    return Replay(pairs, prob, right, top_sim, top_right, answerable)


def figures(scores: np.ndarray, right: np.ndarray, bound: float, n_positive: int) -> dict:
    """hits, wrong hits, misses, wrong share and recall at one bound."""
    hit = scores >= bound
    hits, good = int(hit.sum()), int((hit & right).sum())
    return {"n": len(scores), "hits": hits, "correct_hits": good, "wrong_hits": hits - good,
            "misses": len(scores) - hits, "wrong_share": (hits - good) / hits if hits else 0.0,
            "recall": good / n_positive if n_positive else 0.0}


def by_label(rep: Replay, bound: float) -> dict:
    """Paraphrases (label 1) that hit the right entry; look-alikes (label 0) that hit at all."""
    labels = np.array([p.label for p in rep.pairs])
    hit = rep.prob >= bound
    pos, neg = labels == 1, labels == 0
    out: dict[str, float] = {"paraphrases": int(pos.sum()), "look_alikes": int(neg.sum())}
    out["paraphrase_right_hit_rate"] = float((hit & rep.right & pos).sum() / max(pos.sum(), 1))
    out["look_alike_hit_rate"] = float((hit & neg).sum() / max(neg.sum(), 1))
    kinds = sorted({p.kind for p in rep.pairs if p.label == 0 and p.kind})
    for kind in kinds:
        mask = neg & np.array([p.kind == kind for p in rep.pairs])
        out[f"look_alike_hits_{kind}"] = int((hit & mask).sum())
    return out


def report(rep: Replay, bound: float) -> dict:
    """The verifier at `bound` beside static cosine thresholds on the same replay."""
    n_pos = int(rep.answerable.sum())
    result = figures(rep.prob, rep.right, bound, n_pos)
    if any(p.label == 0 for p in rep.pairs):
        result |= by_label(rep, bound)
    for s in STATIC_THRESHOLDS:
        fig = figures(rep.top_sim, rep.top_right, s, n_pos)
        for key in ("hits", "wrong_hits", "wrong_share", "recall"):
            result[f"static_{s:.2f}_{key}"] = fig[key]
    return result
