"""Offline threshold calibration: from scores on labelled data to a thresholds file.

RouteLLM-style, a threshold is a quantile of the scores: "send the share f of
calls to the strong tier" is the score above which a share f of the
calibration prompts lies. A quality target ("keep Q of the strong tier's
accuracy") first becomes the smallest share whose accuracy on the data
reaches Q * acc_strong.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cascade.data import Table
from cascade.metrics import GRID, accuracy_curve, cumulative_gain, oracle_scores, pgr_curve
from cascade.thresholds import Thresholds

TargetKind = Literal["strong-fraction", "quality"]


@dataclass(frozen=True)
class Target:
    """What the operator asks for: a strong-call share, or a share of strong quality."""

    kind: TargetKind
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse `strong-fraction=F` or `quality=Q` (both in [0, 1])."""
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or name not in ("strong-fraction", "quality"):
            raise ValueError(
                f"--target: expected strong-fraction=F or quality=Q, got {text!r}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--target: {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--target: {name} must be in [0, 1], got {value}")
        return cls("quality" if name == "quality" else "strong-fraction", value)


def threshold_for_share(scores: np.ndarray, share: float) -> float:
    """The threshold that sends the top `share` of `scores` strong (score >= threshold)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if ordered.size == 0:
        raise ValueError("no scores to calibrate on")
    k = round(share * ordered.size)
    if k == 0:
        return float(min(1.0, np.nextafter(ordered[0], np.inf)))
    return float(np.clip(ordered[k - 1], 0.0, 1.0))


def share_for_quality(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, quality: float
) -> float:
    """Smallest strong-call share whose accuracy reaches `quality` * acc_strong."""
    cum = cumulative_gain(scores, weak, strong)
    n = cum.size - 1
    acc = (float(np.sum(weak)) + cum) / n
    goal = quality * float(np.mean(strong)) - 1e-12
    reached = np.nonzero(acc >= goal)[0]
    return float(reached[0] / n) if reached.size else 1.0


def calibrate(
    base: Thresholds,
    scores: np.ndarray,
    share: float,
    band: float = 0.15,
    calibration: dict[str, object] | None = None,
) -> Thresholds:
    """`base` with route and hybrid thresholds set for the strong-call `share`.

    The route threshold of the most capable tier sends `share` of the prompts
    there; tiers in between keep their value, lowered where needed to stay in
    order. The hybrid band cascades the prompts between shares
    `share - band` and `share + band`.
    """
    values = dict(base.thresholds)
    top = threshold_for_share(scores, share)
    values[f"route.{base.tiers[-1]}"] = top
    for tier in base.tiers[1:-1]:
        values[f"route.{tier}"] = min(values[f"route.{tier}"], top)
    easy = threshold_for_share(scores, min(1.0, share + band))
    hard = threshold_for_share(scores, max(0.0, share - band))
    values["hybrid.easy"], values["hybrid.hard"] = min(easy, hard), max(easy, hard)
    return Thresholds.model_validate(
        {**base.model_dump(), "thresholds": values, "calibration": calibration or {}}
    )


def curve_rows(
    scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, steps: int = 100
) -> list[dict[str, float]]:
    """The cost-quality curve at `steps` + 1 shares, with random and oracle beside it."""
    shares = np.linspace(0.0, 1.0, steps + 1)
    acc = accuracy_curve(scores, weak, strong, shares)
    pgr = pgr_curve(scores, weak, strong, shares)
    oracle = accuracy_curve(oracle_scores(weak, strong), weak, strong, shares)
    random = accuracy_curve(np.zeros(len(scores)), weak, strong, shares)
    return [
        {
            "strong_share": float(s),
            "threshold": threshold_for_share(scores, float(s)),
            "accuracy": float(a),
            "pgr": float(p),
            "random_accuracy": float(r),
            "oracle_accuracy": float(o),
        }
        for s, a, p, r, o in zip(shares, acc, pgr, random, oracle, strict=True)
    ]


def write_scored_csv(table: Table, scores: np.ndarray, path: str | Path,
                     column: str = "score") -> Path:
    """`table` as a RouteLLM-format CSV with one more column of scores, and the group.

    `cmesh tune --data PATH --scores-column score` calibrates thresholds on
    it without scoring again: the way to tune on out-of-fold scores.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", table.weak_model, table.strong_model, column, "group"])
        for row in zip(table.prompts, table.weak, table.strong, scores, table.groups,
                       strict=True):
            prompt, weak, strong, score, group = row
            writer.writerow([prompt, bool(weak), bool(strong), f"{float(score):.6f}", group])
    return path


def write_curve_csv(rows: list[dict[str, float]], path: str | Path) -> Path:
    """Write the curve rows as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_curve(
    rows: list[dict[str, float]], path: str | Path, title: str, chosen_share: float | None
) -> Path:
    """Accuracy against strong-call share (classifier, random, oracle) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shares = [100 * r["strong_share"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(shares, [r["accuracy"] for r in rows], label="classifier", lw=2)
    ax.plot(shares, [r["random_accuracy"] for r in rows], label="random", ls="--")
    ax.plot(shares, [r["oracle_accuracy"] for r in rows], label="oracle", ls=":")
    grid = {round(100 * g) for g in GRID}
    ax.scatter([s for s in shares if round(s) in grid],
               [r["accuracy"] for r in rows if round(100 * r["strong_share"]) in grid], s=12)
    if chosen_share is not None:
        ax.axvline(100 * chosen_share, color="grey", lw=1)
    ax.set_xlabel("calls to the strong tier (%)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
