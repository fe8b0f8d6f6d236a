"""Length as the backbone: prompt length's rank plus a learned correction, shrunk out of domain.

Issue 22: on MMLU subjects it never saw, the boosted classifier routed worse
than prompt length alone (lockbox APGR 0.519 against 0.538). This router
starts from length and adds only what the training data says transfers:

    logit(score) = logit(rank of length among the training prompts)
                   + weight * shrink(prompt) * correction(prompt)

- the correction is a ridge head of `cascade.designs` (its prediction in
  standard deviations of its training predictions);
- `shrink` is 1, or (`centroid`) the share of training prompts that lie
  further from the training groups than this prompt does: its cosine to the
  nearest centroid of the training groups' MiniLM embeddings, ranked among
  the training prompts' cosines to the nearest centroid of another group (so
  a prompt as close to the training data as a typical training prompt is to
  other subjects gets 0.5, and one further than all of them gets 0);
- `weight` (logit units per standard deviation) is chosen with the
  correction and the shrink by cross-validation over held-out groups;
  `weight` 0 is exactly prompt length's ranking, so the choice can fall back
  to length where no correction carries over to unseen subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cascade.designs import DESIGNS, Design
from cascade.features import FEATURE_NAMES
from cascade.metrics import apgr
from cascade.training import Head, fit_head

LOG_CHARS = FEATURE_NAMES.index("log_chars")
Shrink = Literal["none", "centroid"]
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Correction weights tried (logit units per standard deviation of the correction)."""
CHOICE_CORRECTIONS = ("form-ridge-within", "form-ridge", "form-emb8-ridge")
OPEN_CORRECTIONS = ("open-form-ridge-100", "open-form-emb16-ridge-100")


@dataclass(frozen=True)
class BackboneDesign:
    """One backbone router: which correction, how much of it, and how it is shrunk."""

    correction: str
    weight: float
    shrink: Shrink = "none"

    @property
    def name(self) -> str:
        """`backbone:<correction>:<weight>:<shrink>` (weight 0 is length alone)."""
        if self.weight == 0.0:
            return "backbone:length"
        return f"backbone:{self.correction}:{self.weight:g}:{self.shrink}"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (stored in the artifact's config and printed by the CLI)."""
        return {"name": self.name, "router": "length-backbone", **asdict(self)}


def candidates(corrections: Sequence[str], weights: Sequence[float] = WEIGHTS,
               shrinks: Sequence[Shrink] = ("none", "centroid")) -> list[BackboneDesign]:
    """Length alone first (ties go to it), then every correction x weight x shrink."""
    first = BackboneDesign(corrections[0], 0.0)
    rest = [BackboneDesign(c, w, s) for c in corrections for s in shrinks for w in weights
            if w > 0]
    return [first, *rest]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ecdf(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank of each value among the sorted `reference`, in (0, 1)."""
    n = len(reference)
    lo = np.searchsorted(reference, values, side="left")
    hi = np.searchsorted(reference, values, side="right")
    return (lo + hi + 1.0) / (2.0 * n + 2.0)


@dataclass
class Parts:
    """The terms of the score for some rows, before the weight is applied."""

    base: np.ndarray
    corrections: dict[str, np.ndarray]
    shrink: np.ndarray | None

    def logit(self, design: BackboneDesign) -> np.ndarray:
        """`base + weight * shrink * correction` for one design."""
        if design.weight == 0.0:
            return self.base
        shrink: np.ndarray | float = 1.0
        if design.shrink == "centroid":
            if self.shrink is None:
                raise ValueError("the centroid shrink needs the prompts' embeddings")
            shrink = self.shrink
        return self.base + design.weight * shrink * self.corrections[design.correction]


@dataclass
class Terms:
    """What the score's terms were fitted on: training lengths, corrections, centroids."""

    lengths: np.ndarray
    """Sorted log character counts of the training prompts."""
    corrections: dict[str, Head]
    centroids: np.ndarray | None
    """Unit-norm mean embedding of each training group."""
    reference: np.ndarray | None
    """Sorted cosine of each training prompt to the nearest centroid of another group."""

    def parts(self, feats: np.ndarray, embeddings: np.ndarray | None,
              need_shrink: bool = True) -> Parts:
        """Score terms of the rows `feats` (embeddings row-aligned or None)."""
        x = feats[:, LOG_CHARS].astype(np.float64)
        rank = _ecdf(self.lengths, x)
        # The tiny slope keeps prompts beyond the training range ordered by length.
        base = np.log(rank / (1.0 - rank)) + 1e-6 * x
        corrections = {}
        for name, head in self.corrections.items():
            if head.uses_embedding and embeddings is None:
                continue
            corrections[name] = np.clip((head.predict(feats, embeddings) - head.center)
                                        / head.scale, -4.0, 4.0)
        shrink = None
        if need_shrink and self.centroids is not None and embeddings is not None:
            assert self.reference is not None
            nearest = (_unit(embeddings) @ self.centroids.T).max(axis=1)
            shrink = _ecdf(self.reference, nearest)
        return Parts(base, corrections, shrink)


def fit_terms(feats: np.ndarray, embeddings: np.ndarray | None, gain: np.ndarray,
              groups: np.ndarray, corrections: Sequence[str]) -> Terms:
    """Fit every correction head, and the length and centroid references, on these rows."""
    heads = {}
    for name in dict.fromkeys(corrections):
        design: Design = DESIGNS[name]
        if design.components and embeddings is None:
            continue
        heads[name] = fit_head(design, feats, embeddings, gain, groups)
    centroids = reference = None
    if embeddings is not None:
        unit = _unit(embeddings)
        names, inverse = np.unique(groups, return_inverse=True)
        sums = np.zeros((len(names), unit.shape[1]))
        np.add.at(sums, inverse, unit)
        centroids = _unit(sums)
        sims = unit @ centroids.T
        if len(names) > 1:
            sims[np.arange(len(unit)), inverse] = -np.inf  # the other groups only
        reference = np.sort(sims.max(axis=1))
    return Terms(np.sort(feats[:, LOG_CHARS].astype(np.float64)), heads, centroids, reference)


@dataclass
class Backbone:
    """A fitted backbone router; a head of `cascade.training.Artifact`."""

    design: BackboneDesign
    terms: Terms

    @property
    def uses_embedding(self) -> bool:
        """Whether scoring needs the prompts' MiniLM embeddings."""
        if self.design.weight == 0.0:
            return False
        head = self.terms.corrections[self.design.correction]
        return self.design.shrink == "centroid" or head.uses_embedding

    def score(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Scores in (0, 1): the logistic of the backbone's logit."""
        parts = self.terms.parts(feats, embeddings, self.design.shrink == "centroid")
        return 1.0 / (1.0 + np.exp(-parts.logit(self.design)))

    def predict(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """On the gain scale of `Head.predict` (2 * score - 1), as the artifact expects."""
        return 2.0 * self.score(feats, embeddings) - 1.0


def fit_backbone(design: BackboneDesign, feats: np.ndarray, embeddings: np.ndarray | None,
                 gain: np.ndarray, groups: np.ndarray) -> Backbone:
    """Fit one backbone design on these rows (only the correction it names)."""
    need = design.weight > 0 and (design.shrink == "centroid"
                                  or DESIGNS[design.correction].components > 0)
    terms = fit_terms(feats, embeddings if need else None, gain, groups,
                      [design.correction] if design.weight > 0 else [])
    return Backbone(design, terms)


@dataclass
class BackboneChoice:
    """The design the inner loop chose, its inner APGR, and every candidate's."""

    design: BackboneDesign
    inner_apgr: dict[str, float]
    oof: np.ndarray
    """Out-of-fold scores (logistic of the logit) of the chosen design on the chosen rows."""


def choose_backbone(feats: np.ndarray, embeddings: np.ndarray | None, weak: np.ndarray,
                    strong: np.ndarray, groups: np.ndarray,
                    splits: Sequence[tuple[np.ndarray, np.ndarray]],
                    designs: Sequence[BackboneDesign]) -> BackboneChoice:
    """The candidate with the best pooled out-of-fold APGR over `splits` (rows of the arrays).

    Every correction is fitted once per fold; the weights and shrinks are arithmetic on it.
    Candidates that need embeddings are skipped when there are none.
    """
    gain = strong.astype(np.float64) - weak.astype(np.float64)
    usable = [d for d in designs if embeddings is not None or d.weight == 0.0 or (
        d.shrink == "none" and DESIGNS[d.correction].components == 0)]
    corrections = sorted({d.correction for d in usable if d.weight > 0})
    oof: dict[str, np.ndarray] = {d.name: np.full(len(gain), np.nan) for d in usable}
    covered = np.zeros(len(gain), dtype=bool)
    for train, test in splits:
        emb_train = embeddings[train] if embeddings is not None else None
        emb_test = embeddings[test] if embeddings is not None else None
        terms = fit_terms(feats[train], emb_train, gain[train], groups[train], corrections)
        parts = terms.parts(feats[test], emb_test)
        for d in usable:
            oof[d.name][test] = parts.logit(d)
        covered[test] = True
    figures = {name: apgr(s[covered], weak[covered], strong[covered]) for name, s in oof.items()}
    order = [d.name for d in usable]
    best = max(figures, key=lambda n: (figures[n], -order.index(n)))
    design = usable[order.index(best)]
    return BackboneChoice(design, figures, 1.0 / (1.0 + np.exp(-oof[best])))


def by_name(designs: Sequence[BackboneDesign]) -> Mapping[str, BackboneDesign]:
    """Designs keyed by their names."""
    return {d.name: d for d in designs}
