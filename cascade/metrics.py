"""Cost-quality evaluation of a two-tier router, with RouteLLM's definitions.

A router sends a share of the prompts (the highest scores) to the strong
tier and the rest to the weak tier. With per-prompt correctness of both
tiers this gives the accuracy at every strong-call share:

- PGR (performance gap recovered) = (acc - acc_weak) / (acc_strong - acc_weak)
- APGR = area under PGR against the strong-call share, trapezoid over
  0, 10, ..., 100 % (RouteLLM, "RouteLLM: Learning to Route LLMs with
  Preference Data", section 5.1)
- CPT(x %) = the smallest strong-call share whose PGR reaches x %

Prompts with equal scores cannot be told apart by the threshold rule, so a
tie group is counted at its average gain (the expectation over tie orders):
a router that gives every prompt the same score is the random router, with
APGR 0.5 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.linspace(0.0, 1.0, 11)
"""Strong-call shares at which APGR is sampled (RouteLLM: 0, 10, ..., 100 %)."""


@dataclass(frozen=True)
class CurveSummary:
    """Figures of one router on one labelled table."""

    n: int
    acc_weak: float
    acc_strong: float
    apgr: float
    cpt50: float
    cpt80: float
    random_apgr: float
    oracle_apgr: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


def _as_arrays(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak, dtype=np.float64)
    strong = np.asarray(strong, dtype=np.float64)
    if not (scores.shape == weak.shape == strong.shape) or scores.ndim != 1:
        raise ValueError(
            f"scores, weak and strong must be 1-d of one length, got "
            f"{scores.shape}, {weak.shape}, {strong.shape}"
        )
    if scores.size == 0:
        raise ValueError("cannot evaluate a router on an empty table")
    return scores, strong - weak


def cumulative_gain(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Total (strong - weak) correctness gained by sending the top-k scores strong.

    Returns an array of length n + 1: entry k is the expected gain when the k
    highest-scoring prompts go to the strong tier (ties at their average).
    """
    scores, gain = _as_arrays(scores, weak, strong)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_gain = gain[order]
    # Replace every gain by the mean of its tie group.
    _, start, counts = np.unique(-sorted_scores, return_index=True, return_counts=True)
    group_mean = np.add.reduceat(sorted_gain, start) / counts
    smoothed = np.repeat(group_mean, counts)
    return np.concatenate([[0.0], np.cumsum(smoothed)])


def accuracy_curve(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, shares: np.ndarray = GRID
) -> np.ndarray:
    """Accuracy when the share `shares[i]` of prompts (highest scores) goes strong."""
    cum = cumulative_gain(scores, weak, strong)
    n = cum.size - 1
    positions = np.asarray(shares, dtype=np.float64) * n
    gains = np.interp(positions, np.arange(n + 1), cum)
    return (float(np.mean(weak)) * n + gains) / n


def pgr_curve(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, shares: np.ndarray = GRID
) -> np.ndarray:
    """PGR at each strong-call share; raises when both tiers score the same."""
    acc_w = float(np.mean(weak))
    acc_s = float(np.mean(strong))
    if acc_s == acc_w:
        raise ValueError("acc_strong equals acc_weak: PGR is undefined on this table")
    return (accuracy_curve(scores, weak, strong, shares) - acc_w) / (acc_s - acc_w)


def apgr(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    """Area under PGR against strong-call share, trapezoid over 0, 10, ..., 100 %."""
    pgr = pgr_curve(scores, weak, strong, GRID)
    return float(np.sum((pgr[1:] + pgr[:-1]) / 2.0 * np.diff(GRID)))


def cpt(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, target_pgr: float) -> float:
    """Smallest strong-call share (0..1, per prompt) whose PGR reaches `target_pgr`."""
    n = len(scores)
    shares = np.arange(n + 1) / n
    pgr = pgr_curve(scores, weak, strong, shares)
    reached = np.nonzero(pgr >= target_pgr - 1e-12)[0]
    return float(shares[reached[0]]) if reached.size else 1.0


def oracle_scores(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Scores of the oracle router: strong-only wins first, strong-only losses last."""
    return np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)


def summarize(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> CurveSummary:
    """APGR, CPT(50 %), CPT(80 %) of `scores`, beside the random router and the oracle."""
    scores = np.asarray(scores, dtype=np.float64)
    return CurveSummary(
        n=int(scores.size),
        acc_weak=float(np.mean(weak)),
        acc_strong=float(np.mean(strong)),
        apgr=apgr(scores, weak, strong),
        cpt50=cpt(scores, weak, strong, 0.5),
        cpt80=cpt(scores, weak, strong, 0.8),
        random_apgr=apgr(np.zeros_like(scores), weak, strong),
        oracle_apgr=apgr(oracle_scores(weak, strong), weak, strong),
    )
