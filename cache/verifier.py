"""The verifier: P(cached prompt answers the new one), and its δ-derived bound.

A small MLP over pair features (`cache.features`): the two MiniLM embeddings'
cosine, element-wise product and absolute difference, plus lexical signals
and the rarity (IDF) of the words only one side has. It reuses the vectors the
cache already holds, so judging a candidate costs microseconds rather than a
second transformer pass. A logistic second stage turns each pair score into
the probability that a *hit* on that candidate is right, looking at its rivals
in the same lookup: a query sitting between two near-identical cached prompts
is a coin flip whatever the pair score. The hit bound for any δ is derived
from the calibration outcomes shipped beside it (`cache.calibration`).

The artifact is a folder: `verifier.npz` (weights, feature scaling, word
rarities, second stage, calibration outcomes) and `verifier.json` (metadata,
derived bounds for common δ, evaluation figures).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cache.calibration import Bound, derive_bound
from cache.features import Rarity, contradicts, pair_features, same_text

ARTIFACT_DIR = Path(__file__).parent / "artifacts" / "verifier"


class FeatureVerifier:
    """Numpy inference of the trained MLP; thread-safe (no state changes)."""

    def __init__(self, params: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        self.layers = [(params[f"w{i}"], params[f"b{i}"]) for i in range(int(params["n_layers"]))]
        self.mean, self.scale = params["mean"], params["scale"]
        self.context = params.get("context")
        self.calib_probs = params.get("calib_probs")
        self.calib_correct = params.get("calib_correct")
        self.calib_positive = int(params.get("calib_positive", 0))
        self.confidence = float(params.get("confidence", 0.9))
        self.rarity = Rarity(
            dict(zip(params["rarity_words"].tolist(), params["rarity_values"].tolist(),
                     strict=True)), float(params["rarity_unseen"]))
        self.meta = meta or {}

    @classmethod
    def load(cls, folder: str | Path | None = None) -> FeatureVerifier:
        """Load an artifact folder (default: the one shipped in `cache/artifacts`)."""
        folder = Path(folder) if folder else ARTIFACT_DIR
        with np.load(folder / "verifier.npz") as data:
            params = {k: data[k] for k in data.files}
        meta_path = folder / "verifier.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(params, meta)

    def save(self, folder: str | Path, meta: dict[str, Any]) -> None:
        """Write the artifact folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"n_layers": np.array(len(self.layers)),
                                         "mean": self.mean, "scale": self.scale,

                                         "confidence": np.array(self.confidence),
                                         "rarity_words": np.array(list(self.rarity.table)),
                                         "rarity_values": np.array(
                                             list(self.rarity.table.values()), np.float32),
                                         "rarity_unseen": np.array(self.rarity.unseen)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        if self.calib_probs is not None and self.calib_correct is not None:
            arrays["calib_probs"] = self.calib_probs.astype(np.float32)
            arrays["calib_correct"] = self.calib_correct.astype(np.int8)
            arrays["calib_positive"] = np.array(self.calib_positive)
        if self.context is not None:
            arrays["context"] = self.context
        np.savez_compressed(folder / "verifier.npz", **arrays)
        (folder / "verifier.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Raw scores of feature rows."""
        h = (features - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0].astype(np.float64)

    def pair_logits(self, queries: list[str], query_vecs: np.ndarray,
                    candidates: list[str], candidate_vecs: np.ndarray) -> np.ndarray:
        """The MLP's raw score of each (query, candidate) pair on its own."""
        if not queries:
            return np.zeros(0)
        feats = pair_features(candidates, candidate_vecs, queries, query_vecs, self.rarity)
        return self.logits(feats)

    def from_logits(self, logits: np.ndarray, sims: np.ndarray,
                    groups: np.ndarray) -> np.ndarray:
        """Probabilities from pair scores judged against their rivals (`context_features`)."""
        if self.context is None:
            return 1.0 / (1.0 + np.exp(-logits))
        z = context_features(logits, sims, groups) @ self.context[:-1] + self.context[-1]
        return 1.0 / (1.0 + np.exp(-z))

    def probabilities(self, queries: list[str], query_vecs: np.ndarray,
                      candidates: list[str], candidate_vecs: np.ndarray,
                      sims: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Calibrated P(a hit on this candidate is right) for each row.

        Two rules sit above the model: the same text (case and spacing aside)
        is the same question, probability 1; a pair that differs in a number,
        in a negation on one side only, or in a polarity word swapped for its
        opposite (on/off) is a different question, probability 0. The QQP
        training data holds too few such look-alikes for the model to learn
        how decisive they are.
        """
        logits = self.pair_logits(queries, query_vecs, candidates, candidate_vecs)
        probs = self.from_logits(logits, np.asarray(sims, np.float64), np.asarray(groups))
        for i, (q, c) in enumerate(zip(queries, candidates, strict=True)):
            if same_text(q, c):
                probs[i] = 1.0
            elif contradicts(q, c):
                probs[i] = 0.0
        return probs

    def bound(self, delta: float) -> Bound:
        """The derived bound for `delta`, with expected hit and wrong-hit rates.

        Without calibration outcomes (a model being trained) nothing can be
        promised, so the bound is unreachable and the cache never hits.
        """
        if self.calib_probs is None or self.calib_correct is None:
            return Bound(delta, 1.0, 0.0, 0.0, 0.0, 0)
        return _bound(self, round(float(delta), 6))

    def threshold(self, delta: float) -> float:
        """The probability a hit needs for a wrong-hit share of at most `delta`."""
        return self.bound(delta).threshold


def context_features(logits: np.ndarray, sims: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: its score and cosine, their margins over the best rival of the same
    lookup, and how many rivals there are. A lone, clear winner is a safer hit
    than one of several near-equal cached prompts."""
    n = len(logits)
    other_logit = np.full(n, -10.0)
    other_sim = np.zeros(n)
    count = np.zeros(n)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        count[idx] = len(idx) - 1
        if len(idx) < 2:
            continue
        for i in idx:
            rest = idx[idx != i]
            other_logit[i] = logits[rest].max()
            other_sim[i] = sims[rest].max()
    clipped = np.clip(logits, -10, 10)
    return np.stack([clipped, sims, np.clip(logits - other_logit, -10, 10), sims - other_sim,
                     count], axis=1)


@lru_cache(maxsize=64)
def _bound(verifier: FeatureVerifier, delta: float) -> Bound:
    assert verifier.calib_probs is not None and verifier.calib_correct is not None
    return derive_bound(verifier.calib_probs.astype(np.float64), verifier.calib_correct,
                        verifier.calib_positive, delta, verifier.confidence)
