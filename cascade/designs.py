"""Candidate designs of a classifier head, named, for selection by nested cross-validation.

A design is everything a head's fit depends on: which prompt features,
how many MiniLM principal components, which regressor and its
hyper-parameters, whether subjects are reweighted to count alike, and
(for ensembles) which other designs it averages. Selection
(`cascade.selection`) picks one per head by inner-loop APGR only; the
outer loop and the lockbox never take part in that choice.

Every head regresses the strong tier's gain (strong correct - weak
correct, in {-1, 0, 1}): a prompt both tiers get wrong is no reason to pay
for the strong one, and APGR rewards ranking by expected gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cascade.features import FEATURE_NAMES, LENGTH_FEATURES
from core.prefill import FEATURE_NAMES as PREFILL_FEATURES

ORIGINAL_FEATURES = FEATURE_NAMES[:24]
"""The 24 surface features of the first classifier (before the form features)."""

COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, *PREFILL_FEATURES)
"""Columns a feature matrix may hold: the form features, then (only where the small
tier's prefill statistics were computed, `cascade.prefill`) those statistics."""
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "length": LENGTH_FEATURES,
    "surface": ORIGINAL_FEATURES,
    "form": FEATURE_NAMES,
    "prefill": PREFILL_FEATURES,
    "form-prefill": COLUMNS,
}


@dataclass(frozen=True)
class Design:
    """One way to fit a head; `members` makes it an ensemble of other designs."""

    name: str
    model: Literal["ridge", "gbm", "ensemble"] = "ridge"
    features: str = "form"
    components: int = 0
    alpha: float = 100.0
    max_iter: int = 100
    learning_rate: float = 0.05
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 100
    l2_regularization: float = 10.0
    monotone_length: bool = False
    reweight: bool = True
    members: tuple[str, ...] = ()
    target: Literal["gain", "within"] = "gain"
    """`within`: the gain less its subject's mean gain, so the head learns what makes a
    question harder than its subject's others, and no subject's level."""
    seed: int = 0

    def columns(self) -> np.ndarray:
        """Indices of this design's features in `COLUMNS`."""
        return np.asarray([COLUMNS.index(n) for n in FEATURE_SETS[self.features]])

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (stored in the artifact and printed by the CLI)."""
        return asdict(self)

    def estimator(self) -> Any:
        """A fresh, unfitted scikit-learn regressor for this design."""
        if self.model == "ridge":
            from sklearn.linear_model import Ridge
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
        if self.model == "gbm":
            from sklearn.ensemble import HistGradientBoostingRegressor

            names = FEATURE_SETS[self.features]
            monotone = [1 if self.monotone_length and n in LENGTH_FEATURES else 0 for n in names]
            monotone += [0] * self.components
            return HistGradientBoostingRegressor(
                max_iter=self.max_iter, learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization, monotonic_cst=monotone,
                early_stopping=False, random_state=self.seed)
        raise ValueError(f"design {self.name!r}: an ensemble has no estimator of its own")


def within_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`values` less the mean of their group."""
    _, inverse = np.unique(groups, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return values - means[inverse]


def subject_weights(groups: np.ndarray) -> np.ndarray:
    """Row weights that give every group the same total (mean weight 1).

    Without them a large subject (moral_scenarios: 895 questions of one
    template) teaches its own template rather than what transfers.
    """
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights * (len(groups) / weights.sum())


CHOICE_DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("length-ridge", features="length", alpha=10.0),
    Design("surface-ridge", features="surface", alpha=1000.0),
    Design("form-ridge", alpha=1000.0),
    Design("form-ridge-unweighted", alpha=1000.0, reweight=False),
    Design("form-emb8-ridge", components=8, alpha=1000.0),
    Design("form-gbm", model="gbm", features="form"),
    Design("form-gbm-monotone", model="gbm", features="form", monotone_length=True),
    Design("ensemble-ridge-gbm", model="ensemble",
           members=("form-ridge", "form-gbm-monotone")),
    Design("ensemble-four", model="ensemble",
           members=("surface-ridge", "form-ridge", "form-gbm", "form-gbm-monotone")),
    # Added after the first lockbox look (artifact dbde7c9d) missed every target:
    # learn what makes a question harder than the others of its subject.
    Design("form-ridge-within", alpha=1000.0, target="within"),
    Design("form-gbm-within", model="gbm", features="form", target="within"),
    Design("form-gbm-monotone-within", model="gbm", features="form", monotone_length=True,
           target="within"),
    Design("ensemble-within", model="ensemble",
           members=("form-ridge-within", "form-gbm-monotone-within")),
)}
"""Candidates for the multiple-choice head (trained and judged on MMLU subjects).

Only two gradient-boosting designs: one boosted fit
takes 15-50 s on this shared machine (ridge: milliseconds); the first
classifier's boosted design (`surface` features, 15 leaves, no
reweighting) read 0.669 on a non-nested split and 0.558 on unseen subjects.
"""

OPEN_DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("open-length-ridge", features="length", alpha=10.0, reweight=False),
    Design("open-form-ridge-10", alpha=10.0, reweight=False),
    Design("open-form-ridge-100", alpha=100.0, reweight=False),
    Design("open-form-ridge-1000", alpha=1000.0, reweight=False),
    Design("open-surface-ridge-10", features="surface", alpha=10.0, reweight=False),
    Design("open-form-emb16-ridge-100", components=16, alpha=100.0, reweight=False),
    Design("open-form-emb32-ridge-100", components=32, alpha=100.0, reweight=False),
)}
"""Candidates for the open-question head (trained and judged on GSM8K prompts)."""

PREFILL_DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("prefill-ridge", features="prefill", alpha=10.0),
    Design("prefill-ridge-within", features="prefill", alpha=10.0, target="within"),
    Design("form-prefill-ridge-within", features="form-prefill", alpha=1000.0, target="within"),
    Design("open-prefill-ridge-100", features="prefill", alpha=100.0, reweight=False),
    Design("open-form-prefill-ridge-100", features="form-prefill", alpha=100.0,
           reweight=False),
)}
"""Heads that read the small tier's prefill statistics (issue 22, build 4): only for
rows that have them (`cascade.prefill`), so never candidates of the shipped selection."""
DESIGNS: dict[str, Design] = {**CHOICE_DESIGNS, **OPEN_DESIGNS, **PREFILL_DESIGNS}


def get_design(name: str) -> Design:
    """The registered design called `name` (a clear error naming the known ones)."""
    try:
        return DESIGNS[name]
    except KeyError:
        raise ValueError(f"design: unknown {name!r}; known: {sorted(DESIGNS)}") from None
