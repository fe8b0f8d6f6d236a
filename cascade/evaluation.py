"""The yardstick of issue 12: nested CV on development data, and the lockbox once.

`development_report` runs nested cross-validation (MMLU by subject, GSM8K
by prompt) and reports outer-loop APGR and CPT(50 %) pooled and per
subject, beside prompt length and random on the very same rows.
`lockbox_report` scores the lockbox subjects with a shipped artifact only,
after checking that the artifact never saw them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.backbone import (
    CHOICE_CORRECTIONS,
    OPEN_CORRECTIONS,
    candidates,
    choose_backbone,
    fit_backbone,
)
from cascade.classifiers import LengthClassifier
from cascade.data import Table
from cascade.designs import Design
from cascade.features import FEATURE_NAMES, feature_matrix
from cascade.lockbox import GSM8K_GROUP, Lockbox
from cascade.metrics import apgr, cpt
from cascade.selection import HeadData, Nested, Progress, choose, folds, nested
from cascade.training import Artifact, is_choice, stamp
from cascade.yardstick import (
    backbone_procedure,
    design_procedure,
    prompt_draws,
    run_yardstick,
    subject_draws,
)


def head_data(table: Table, embeddings: np.ndarray | None, rows: np.ndarray,
              by_group: bool) -> HeadData:
    """The rows `rows` of `table` as one head's data."""
    return HeadData(
        feats=feature_matrix([table.prompts[i] for i in rows]),
        embeddings=np.asarray(embeddings)[rows] if embeddings is not None else None,
        weak=table.weak[rows], strong=table.strong[rows],
        groups=np.asarray(table.groups)[rows], by_group=by_group)


def heads_of(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the choice head (MMLU) and the open head (GSM8K) in `table`."""
    choice = is_choice(feature_matrix(table.prompts))
    gsm = np.asarray(table.groups) == GSM8K_GROUP
    if (choice & gsm).any() or (~choice & ~gsm).any():
        raise ValueError("expected every MMLU row multiple-choice and every GSM8K row open")
    return np.nonzero(choice)[0], np.nonzero(~choice)[0]


def figures(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, Any]:
    """APGR and CPT(50 %) of `scores` (None where both tiers score the same)."""
    if np.mean(weak) == np.mean(strong):
        return {"n": len(scores), "apgr": None, "cpt50": None}
    return {"n": len(scores), "apgr": apgr(scores, weak, strong),
            "cpt50": cpt(scores, weak, strong, 0.5)}


def compare(routers: Mapping[str, np.ndarray], weak: np.ndarray, strong: np.ndarray,
            groups: np.ndarray | None = None) -> dict[str, Any]:
    """Pooled (and, given groups, per-group) figures of several routers on the same rows."""
    out: dict[str, Any] = {"pooled": {n: figures(s, weak, strong) for n, s in routers.items()}}
    if groups is not None:
        out["per_subject"] = {
            g: {n: figures(s[groups == g], weak[groups == g], strong[groups == g])
                for n, s in routers.items()}
            for g in sorted(set(groups.tolist()))}
    return out


def baselines(prompts: Sequence[str]) -> dict[str, np.ndarray]:
    """Prompt length and random (all ties: APGR 0.5 exactly) for the same prompts."""
    return {"length": LengthClassifier().score(prompts).astype(np.float64),
            "random": np.zeros(len(prompts))}


@dataclass
class HeadReport:
    """Outer-loop result of one head, with its baselines and ablation."""

    name: str
    rows: np.ndarray
    nested: Nested
    summary: dict[str, Any]


def evaluate_head(table: Table, embeddings: np.ndarray | None, rows: np.ndarray,
                  designs: Mapping[str, Design], by_group: bool, outer: int, inner: int,
                  seed: int, name: str, progress: Progress) -> HeadReport:
    """Nested CV of one head, compared with length and random on the same rows."""
    data = head_data(table, embeddings, rows, by_group)
    result = nested(data, designs, outer, inner, seed, progress)
    prompts = [table.prompts[i] for i in rows]
    routers = {"classifier": result.scores, **baselines(prompts)}
    summary = compare(routers, data.weak, data.strong, data.groups if by_group else None)
    summary["chosen_per_outer_fold"] = result.chosen
    summary["designs_outer_apgr"] = {
        n: apgr(s, data.weak, data.strong) for n, s in result.per_design.items()}
    return HeadReport(name, rows, result, summary)


@dataclass
class Selection:
    """The shipped designs and the out-of-fold scores of each on development data."""

    choice: str
    open: str
    inner_apgr: dict[str, dict[str, float]]
    oof: np.ndarray
    """Out-of-fold score of every development row under its head's chosen design."""


def select(table: Table, embeddings: np.ndarray | None, choice_designs: Mapping[str, Design],
           open_designs: Mapping[str, Design], k: int = 5, seed: int = 0) -> Selection:
    """The inner procedure on all of `table`: one design per head, and its OOF scores."""
    choice_rows, open_rows = heads_of(table)
    oof = np.full(len(table), np.nan)
    picked: dict[str, str] = {}
    inner: dict[str, dict[str, float]] = {}
    for name, rows, designs, by_group in (("choice", choice_rows, choice_designs, True),
                                          ("open", open_rows, open_designs, False)):
        data = head_data(table, embeddings, rows, by_group)
        made = choose(data, np.arange(len(rows)), designs, k, seed)
        picked[name], inner[name] = made.design, made.inner_apgr
        oof[rows] = made.oof
    return Selection(picked["choice"], picked["open"], inner, oof)


def never_saw(artifact: Artifact, lockbox: Lockbox, lockbox_prompts: Sequence[str]) -> None:
    """Raise unless `artifact` was trained without any lockbox subject or prompt."""
    seen = set(artifact.metadata.get("groups", [])) & set(lockbox.subjects)
    if seen or "groups" not in artifact.metadata:
        raise ValueError(f"artifact {artifact.version} was trained on lockbox subjects "
                         f"{sorted(seen) or '(unknown: no group list)'}; retrain it")
    if artifact.overlap(lockbox_prompts) > 0:
        raise ValueError(f"artifact {artifact.version} saw lockbox prompts; retrain it")


def lockbox_report(artifact: Artifact, lockbox: Lockbox, box: Table,
                   embeddings: np.ndarray | None, route_threshold: float | None = None,
                   target_share: float | None = None) -> dict[str, Any]:
    """The shipped artifact on the lockbox, beside length and random; strong share too."""
    never_saw(artifact, lockbox, box.prompts)
    scores = artifact.predict(box.prompts, embeddings).astype(np.float64)
    routers = {"classifier": scores, **baselines(box.prompts)}
    report = compare(routers, box.weak, box.strong, np.asarray(box.groups))
    report["artifact"] = artifact.version
    if route_threshold is not None:
        share = float(np.mean(scores >= route_threshold))
        report["strong_share"] = {"threshold": route_threshold, "share": share,
                                  "target": target_share,
                                  "within_5_points": None if target_share is None
                                  else abs(share - target_share) <= 0.05}
    return report


@dataclass
class BackboneSelection:
    """The shipped backbone artifact, what chose it, and its out-of-fold scores."""

    artifact: Artifact
    inner_apgr: dict[str, dict[str, float]]
    oof: np.ndarray
    """Out-of-fold score of every development row under its head's chosen design."""


def select_backbone(table: Table, embeddings: np.ndarray | None, k: int = 5,
                    seed: int = 0) -> BackboneSelection:
    """The length backbone of each head chosen by k-fold CV on all of `table`, then fitted."""
    choice_rows, open_rows = heads_of(table)
    oof = np.full(len(table), np.nan)
    artifact = Artifact(heads={}, feature_names=list(FEATURE_NAMES))
    inner: dict[str, dict[str, float]] = {}
    for name, rows, corrections, by_group in (("choice", choice_rows, CHOICE_CORRECTIONS, True),
                                              ("open", open_rows, OPEN_CORRECTIONS, False)):
        data = head_data(table, embeddings, rows, by_group)
        everything = np.arange(len(rows))
        made = choose_backbone(data.feats, data.embeddings, data.weak, data.strong, data.groups,
                               folds(data, everything, k, seed), candidates(corrections))
        artifact.heads[name] = fit_backbone(made.design, data.feats, data.embeddings,
                                            data.gain, data.groups)
        artifact.config[name] = made.design.as_dict()
        inner[name] = made.inner_apgr
        oof[rows] = made.oof
    stamp(artifact, table, len(choice_rows))
    return BackboneSelection(artifact, inner, oof)


def yardstick_head(table: Table, embeddings: np.ndarray | None, rows: np.ndarray,
                   by_group: bool, fixed: Mapping[str, Design], draws: int = 100,
                   held_out: int = 10, share: float = 0.2, inner: int = 4, seed: int = 0,
                   progress: Progress = lambda _: None) -> dict[str, Any]:
    """Issue 22's yardstick on one head: the nested backbone, fixed designs, length, random.

    MMLU (`by_group`): each draw holds out `held_out` random development subjects;
    GSM8K: a random `share` of its prompts.
    """
    data = head_data(table, embeddings, rows, by_group)
    splits = (subject_draws(data.groups, held_out, draws, seed) if by_group
              else prompt_draws(len(rows), share, draws, seed))
    corrections = CHOICE_CORRECTIONS if by_group else OPEN_CORRECTIONS
    procedures = {"backbone": backbone_procedure(candidates(corrections), inner),
                  **{n: design_procedure(d) for n, d in fixed.items()}}
    report = run_yardstick(data, procedures, splits, seed, progress)
    report["held_out"] = (f"{held_out} random subjects per draw" if by_group
                          else f"{share:.0%} of prompts per draw")
    report["embeddings"] = embeddings is not None
    return report
