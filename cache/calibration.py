"""From the operator's δ to a verifier bound, on calibration data only.

Calibration runs the cache exactly as it serves (insert the calibration
split's cached prompts, ask its queries, keep each query's best verified
candidate) and records that candidate's probability and whether a hit on it
would have been right. For a target wrong-hit share δ, the bound is the
lowest probability at which the *upper* confidence limit (Clopper-Pearson,
one-sided) of the wrong share among hits stays at or below δ, so that the
figure holds on unseen data and not only on the sample it was chosen on.

A sample bound is not enough under shift: traffic of another form (other
wording, other look-alikes) puts its wrong hits at other scores. When the
outcomes come from several forms (`Outcomes.pooled` keeps which row came from
which), each form is left out in turn: the bound derived from the others is
raised until the form left out keeps δ, and the largest such rise, the shift
allowance, is added to the pooled bound (`shifted_bound`). So the shipped δ
is a promise on a form of traffic the table never saw, as far as the
calibration forms differ from one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    # which calibration form each row came from (index into `forms`); one form if empty
    form: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    forms: tuple[str, ...] = ()
    positives: tuple[int, ...] = ()  # n_positive of each form

    def save(self, path: Path) -> None:
        """Write as npz (no pickle)."""
        np.savez_compressed(path, prob=self.prob.astype(np.float64),
                            right=self.right.astype(np.int8),
                            n_positive=np.array(self.n_positive), source=np.array(self.source),
                            form=self.form.astype(np.int16), forms=np.array(self.forms, dtype=str),
                            positives=np.array(self.positives, dtype=np.int64))

    @classmethod
    def load(cls, path: Path) -> Outcomes:
        """Read what `save` wrote."""
        with np.load(path) as data:
            extra = ((data["form"], tuple(str(f) for f in data["forms"]),
                      tuple(int(n) for n in data["positives"])) if "form" in data.files
                     else (np.zeros(0, dtype=np.int16), (), ()))
            return cls(data["prob"], data["right"].astype(bool), int(data["n_positive"]),
                       str(data["source"]), *extra)

    @classmethod
    def pooled(cls, parts: Sequence[Outcomes]) -> Outcomes:
        """Several calibration sets as one, each remembered as a form."""
        return cls(np.concatenate([p.prob for p in parts]),
                   np.concatenate([p.right for p in parts]),
                   sum(p.n_positive for p in parts), " + ".join(p.source for p in parts),
                   np.concatenate([np.full(len(p.prob), i, dtype=np.int16)
                                   for i, p in enumerate(parts)]),
                   tuple(p.source for p in parts), tuple(p.n_positive for p in parts))

    def split_forms(self) -> list[Outcomes]:
        """One `Outcomes` per form (itself when it has one)."""
        if len(self.forms) < 2:
            return [self]
        return [Outcomes(self.prob[self.form == i], self.right[self.form == i],
                         self.positives[i], name) for i, name in enumerate(self.forms)]


@dataclass(frozen=True)
class Bound:
    """A derived threshold and what calibration expects from it."""

    delta: float
    threshold: float
    expected_hit_rate: float
    expected_wrong_share: float
    expected_recall: float
    calib_hits: int
    shift_allowance: float = 0.0  # added to the pooled bound (`shift_allowance`)

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


def hits_at(probs: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[int, int]:
    """(hits, wrong hits) among rows at or above `threshold` (-1: no candidate, never)."""
    hits = (probs >= threshold) & (probs >= 0)
    return int(hits.sum()), int((hits & ~correct).sum())


def realised_share(probs: np.ndarray, correct: np.ndarray, threshold: float) -> float:
    """The wrong share among rows at or above `threshold` (0 when none is)."""
    n, wrong = hits_at(probs, correct, threshold)
    return wrong / n if n else 0.0


def realised(o: Outcomes, threshold: float) -> dict[str, float]:
    """Hits, wrong hits, wrong share and recall of `o` at `threshold`."""
    n, wrong = hits_at(o.prob, o.right, threshold)
    return {"hits": n, "wrong": wrong, "share": wrong / n if n else 0.0,
            "recall": (n - wrong) / max(o.n_positive, 1)}


def lowest_keeping(o: Outcomes, start: float, delta: float) -> float:
    """The lowest threshold at or above `start` at which `o`'s hits keep `delta` (1.0,
    only exact repeats, when none does)."""
    for t in (start, *np.unique(o.prob[o.prob > start])):
        if realised_share(o.prob, o.right, float(t)) <= delta:
            return float(t)
    return 1.0


def shift_allowance(outcomes: Outcomes, delta: float, confidence: float = 0.9) -> float:
    """How far a bound derived without one calibration form must rise before that form
    keeps `delta`, at most over the forms (0 for outcomes of one form)."""
    forms = outcomes.split_forms()
    if len(forms) < 2:
        return 0.0
    rises = []
    for held, form in enumerate(forms):
        rest = Outcomes.pooled([f for j, f in enumerate(forms) if j != held])
        start = derive_bound(rest.prob, rest.right, rest.n_positive, delta,
                             confidence).threshold
        rises.append(lowest_keeping(form, start, delta) - start)
    return max(rises)


def shifted_bound(outcomes: Outcomes, delta: float, confidence: float = 0.9) -> Bound:
    """The pooled bound for `delta` raised by the shift allowance, and what the pooled
    calibration data expects at it."""
    allowance = shift_allowance(outcomes, delta, confidence)
    base = derive_bound(outcomes.prob, outcomes.right, outcomes.n_positive, delta, confidence)
    threshold = min(1.0, base.threshold + allowance)
    n, wrong = hits_at(outcomes.prob, outcomes.right, threshold)
    n_all = max(len(outcomes.prob), 1)
    return Bound(delta=delta, threshold=threshold, expected_hit_rate=n / n_all,
                 expected_wrong_share=wrong / n if n else 0.0,
                 expected_recall=(n - wrong) / max(outcomes.n_positive, 1), calib_hits=n,
                 shift_allowance=allowance)
