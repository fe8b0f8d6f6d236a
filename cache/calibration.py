"""From the operator's δ to a verifier bound, on calibration data only.

Calibration runs the cache exactly as it serves (insert the calibration
split's cached prompts, ask its queries, keep each query's best verified
candidate) and records that candidate's probability and whether a hit on it
would have been right. For a target wrong-hit share δ, the bound is the
lowest probability at which the *upper* confidence limit (Clopper-Pearson,
one-sided) of the wrong share among hits stays at or below δ, so that the
figure holds on unseen data and not only on the sample it was chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta


@dataclass(eq=False)
class Outcomes:
    """Calibration outcomes: per query, its best candidate's probability (-1: none) and
    whether a hit on it would be right; `n_positive` queries had a right answer cached.

    Compared by identity, so derived bounds can be memoised per table.
    """

    prob: np.ndarray
    right: np.ndarray
    n_positive: int
    source: str = ""

    def save(self, path: Path) -> None:
        """Write as npz (no pickle)."""
        np.savez_compressed(path, prob=self.prob.astype(np.float64),
                            right=self.right.astype(np.int8),
                            n_positive=np.array(self.n_positive), source=np.array(self.source))

    @classmethod
    def load(cls, path: Path) -> Outcomes:
        """Read what `save` wrote."""
        with np.load(path) as data:
            return cls(data["prob"], data["right"].astype(bool), int(data["n_positive"]),
                       str(data["source"]))

    @classmethod
    def pooled(cls, parts: Sequence[Outcomes]) -> Outcomes:
        """Several calibration sets as one."""
        return cls(np.concatenate([p.prob for p in parts]),
                   np.concatenate([p.right for p in parts]),
                   sum(p.n_positive for p in parts), " + ".join(p.source for p in parts))


@dataclass(frozen=True)
class Bound:
    """A derived threshold and what calibration expects from it."""

    delta: float
    threshold: float
    expected_hit_rate: float
    expected_wrong_share: float
    expected_recall: float
    calib_hits: int

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return asdict(self)


def upper_limit(wrong: np.ndarray, hits: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper limit of wrong/hits."""
    hits = np.maximum(hits, 1)
    upper = beta.ppf(confidence, wrong + 1, hits - wrong)
    return np.where(wrong >= hits, 1.0, upper)


def derive_bound(probs: np.ndarray, correct: np.ndarray, n_positive: int, delta: float,
                 confidence: float = 0.9) -> Bound:
    """The bound for `delta` from per-query best-candidate `probs` and `correct` flags.

    Queries with no candidate carry probability -1 (never a hit). `n_positive`
    counts queries that have a right answer in the cache (for recall).
    """
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    n = len(probs)
    order = np.argsort(-probs, kind="stable")
    p_sorted, c_sorted = probs[order], correct[order].astype(np.int64)
    hits = np.arange(1, n + 1)
    wrong = np.cumsum(1 - c_sorted)
    ok = (upper_limit(wrong, hits, confidence) <= delta) & (p_sorted >= 0)
    # a cut can only sit between distinct probabilities
    ok &= np.append(p_sorted[1:] < p_sorted[:-1], True)
    if not ok.any():
        return Bound(delta, 1.0, 0.0, 0.0, 0.0, 0)  # only certain hits: the same text
    k = int(np.flatnonzero(ok).max())
    h, w = k + 1, int(wrong[k])
    return Bound(delta=delta, threshold=float(p_sorted[k]), expected_hit_rate=h / max(n, 1),
                 expected_wrong_share=w / h, expected_recall=(h - w) / max(n_positive, 1),
                 calib_hits=h)
