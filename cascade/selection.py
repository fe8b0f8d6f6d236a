"""Design selection by nested cross-validation: the inner loop chooses, the outer loop reports.

Issue 12's lesson: a dozen designs picked on one subject split read 0.669
on it and 0.558 on subjects it never saw. Here each outer fold holds out
whole subjects (MMLU) or prompts (GSM8K); within its training part an
inner cross-validation of the same kind ranks the candidate designs by
pooled APGR, the winner is refitted on the whole training part and scores
the held-out part. The outer scores were never seen by any choice, so
their APGR measures the procedure, including its choosing.

The same inner procedure run on all development data picks the shipped
design (`select`), and its out-of-fold scores are what thresholds are
calibrated on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from cascade.designs import Design
from cascade.metrics import apgr
from cascade.training import Head, fit_head

Splits = list[tuple[np.ndarray, np.ndarray]]
Progress = Callable[[str], None]


@dataclass
class HeadData:
    """The rows one head learns from: features, embeddings, labels, groups."""

    feats: np.ndarray
    embeddings: np.ndarray | None
    weak: np.ndarray
    strong: np.ndarray
    groups: np.ndarray
    by_group: bool
    """Folds hold out whole groups (MMLU subjects) rather than single prompts (GSM8K)."""

    @property
    def gain(self) -> np.ndarray:
        """Strong correct - weak correct per row."""
        return self.strong.astype(np.float64) - self.weak.astype(np.float64)

    def __len__(self) -> int:
        return len(self.groups)


def folds(data: HeadData, rows: np.ndarray, k: int, seed: int) -> Splits:
    """k train/test splits of `rows` (positions in `data`), by group or by prompt."""
    from sklearn.model_selection import GroupKFold, KFold

    if data.by_group:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(rows, groups=data.groups[rows])
    else:
        parts = KFold(n_splits=k, shuffle=True, random_state=seed).split(rows)
    return [(rows[tr], rows[te]) for tr, te in parts]


def to_score(gain: np.ndarray) -> np.ndarray:
    """The classifier's score from a predicted gain: (1 + gain) / 2 in [0, 1]."""
    return np.clip((1.0 + np.asarray(gain)) / 2.0, 0.0, 1.0)


def _fitter(data: HeadData, train: np.ndarray, designs: Mapping[str, Design],
            ) -> Callable[[str], Head]:
    """Memoised `name -> head fitted on train` (ensembles reuse their members' fits).

    Fits run on one OpenMP thread: on a shared 2-core machine gradient
    boosting's threads fought other processes and ran 5-30x slower
    (measured: 58 s against 11 s for one fit).
    """
    from threadpoolctl import threadpool_limits

    cache: dict[str, Head] = {}
    emb = data.embeddings[train] if data.embeddings is not None else None

    def fitted(name: str) -> Head:
        if name not in cache:
            with threadpool_limits(limits=1):
                cache[name] = fit_head(designs[name], data.feats[train], emb,
                                       data.gain[train], data.groups[train], member=fitted)
        return cache[name]

    return fitted


def _predict(head: Head, data: HeadData, rows: np.ndarray) -> np.ndarray:
    emb = data.embeddings[rows] if data.embeddings is not None else None
    return to_score(head.predict(data.feats[rows], emb))


def oof_scores(data: HeadData, splits: Splits, designs: Mapping[str, Design],
               ) -> dict[str, np.ndarray]:
    """Out-of-fold scores of every design over the test parts of `splits`."""
    out = {name: np.full(len(data), np.nan) for name in designs}
    for train, test in splits:
        fitted = _fitter(data, train, designs)
        for name in designs:
            out[name][test] = _predict(fitted(name), data, test)
    return out


def _pooled_apgr(scores: np.ndarray, data: HeadData, rows: np.ndarray) -> float:
    return apgr(scores[rows], data.weak[rows], data.strong[rows])


@dataclass
class Choice:
    """What the inner loop chose on some rows, and why."""

    design: str
    inner_apgr: dict[str, float]
    oof: np.ndarray = field(repr=False)
    """Out-of-fold scores of the chosen design on the rows it chose on (NaN elsewhere)."""


def choose(data: HeadData, rows: np.ndarray, designs: Mapping[str, Design], k: int,
           seed: int) -> Choice:
    """The design with the best pooled out-of-fold APGR over a k-fold CV of `rows`.

    Ties go to the design listed first (the candidates are listed simplest first).
    """
    scores = oof_scores(data, folds(data, rows, k, seed), designs)
    figures = {name: _pooled_apgr(s, data, rows) for name, s in scores.items()}
    best = max(figures, key=lambda n: (figures[n], -list(designs).index(n)))
    return Choice(best, figures, scores[best])


@dataclass
class Nested:
    """Outer-loop results of nested cross-validation on one head's rows."""

    scores: np.ndarray
    """Outer held-out scores of the inner loop's choice, per row."""
    chosen: list[str]
    """The design the inner loop chose in each outer fold."""
    per_design: dict[str, np.ndarray]
    """Outer held-out scores of each candidate fixed in advance (the ablation table)."""


def nested(data: HeadData, designs: Mapping[str, Design], outer: int = 5, inner: int = 4,
           seed: int = 0, progress: Progress = lambda _: None) -> Nested:
    """Nested CV over all rows of `data`: inner CV chooses, outer folds report."""
    scores = np.full(len(data), np.nan)
    per_design = {name: np.full(len(data), np.nan) for name in designs}
    chosen: list[str] = []
    everything = np.arange(len(data))
    for k, (train, test) in enumerate(folds(data, everything, outer, seed)):
        choice = choose(data, train, designs, inner, seed + 1 + k)
        chosen.append(choice.design)
        ranked = sorted(choice.inner_apgr.items(), key=lambda kv: -kv[1])
        progress(f"outer fold {k + 1}/{outer}: inner loop chose {choice.design}; inner APGR "
                 + ", ".join(f"{n} {a:.3f}" for n, a in ranked))
        fitted = _fitter(data, train, designs)
        for name in designs:
            per_design[name][test] = _predict(fitted(name), data, test)
        scores[test] = per_design[choice.design][test]
    return Nested(scores, chosen, per_design)
