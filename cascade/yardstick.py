"""The yardstick of issue 22: APGR as mean and spread over many random held-out draws.

One lockbox of 10 subjects is a noisy yardstick (over draws of 10
development subjects a design's APGR moves with a standard deviation near
0.09), too noisy to tell designs apart or to say "never worse than length".
So each draw holds out 10 random development subjects (MMLU; GSM8K: a
random share of its prompts), every procedure fits (and, for nested ones,
chooses on inner folds of the draw's training part only) and scores the
held-out rows, and prompt length and random are scored on the same rows.
The report is the mean and spread over draws of each router's pooled APGR
and CPT(50 %), and of its paired difference from length.

Nothing is chosen on a draw's held-out rows, and the lockbox is not here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cascade.backbone import LOG_CHARS, BackboneDesign, choose_backbone, fit_backbone
from cascade.designs import Design
from cascade.metrics import apgr, cpt
from cascade.selection import HeadData, Progress, folds, to_score
from cascade.training import fit_head

Draws = list[tuple[np.ndarray, np.ndarray]]
Procedure = Callable[[HeadData, np.ndarray, np.ndarray, int], tuple[np.ndarray, str]]
"""(data, train rows, test rows, seed) -> (scores of the test rows, what was chosen)."""


def subject_draws(groups: np.ndarray, k: int = 10, n: int = 100, seed: int = 0) -> Draws:
    """`n` (train, test) splits, each holding out `k` whole groups drawn at random."""
    names = np.unique(groups)
    if k >= len(names):
        raise ValueError(f"cannot hold out {k} of {len(names)} groups")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        held = np.isin(groups, rng.choice(names, size=k, replace=False))
        out.append((np.nonzero(~held)[0], np.nonzero(held)[0]))
    return out


def prompt_draws(rows: int, share: float = 0.2, n: int = 100, seed: int = 0) -> Draws:
    """`n` (train, test) splits, each holding out a random `share` of the rows."""
    rng = np.random.default_rng(seed)
    size = max(1, round(share * rows))
    out = []
    for _ in range(n):
        held = np.zeros(rows, dtype=bool)
        held[rng.choice(rows, size=size, replace=False)] = True
        out.append((np.nonzero(~held)[0], np.nonzero(held)[0]))
    return out


def length_procedure(data: HeadData, train: np.ndarray, test: np.ndarray,
                     seed: int) -> tuple[np.ndarray, str]:
    """Prompt length (log characters): nothing to fit."""
    return data.feats[test, LOG_CHARS].astype(np.float64), "length"


def random_procedure(data: HeadData, train: np.ndarray, test: np.ndarray,
                     seed: int) -> tuple[np.ndarray, str]:
    """All ties: APGR 0.5 and CPT(50 %) 50 % exactly."""
    return np.zeros(len(test)), "random"


def design_procedure(design: Design) -> Procedure:
    """A `cascade.designs` head fixed in advance, fitted on each draw's training part."""

    def run(data: HeadData, train: np.ndarray, test: np.ndarray,
            seed: int) -> tuple[np.ndarray, str]:
        emb = data.embeddings
        head = fit_head(design, data.feats[train], emb[train] if emb is not None else None,
                        data.gain[train], data.groups[train])
        return to_score(head.predict(data.feats[test], emb[test] if emb is not None else None)
                        ), design.name

    return run


def backbone_procedure(designs: Sequence[BackboneDesign], inner: int = 4) -> Procedure:
    """The length backbone, its design chosen on inner folds of each training part."""

    def run(data: HeadData, train: np.ndarray, test: np.ndarray,
            seed: int) -> tuple[np.ndarray, str]:
        emb = data.embeddings
        choice = choose_backbone(data.feats, emb, data.weak, data.strong, data.groups,
                                 folds(data, train, inner, seed), designs)
        model = fit_backbone(choice.design, data.feats[train],
                             emb[train] if emb is not None else None,
                             data.gain[train], data.groups[train])
        return model.score(data.feats[test], emb[test] if emb is not None else None
                           ), choice.design.name

    return run


def _spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "p10": float(np.quantile(v, 0.1)), "p90": float(np.quantile(v, 0.9))}


def run_yardstick(data: HeadData, procedures: Mapping[str, Procedure], draws: Draws,
                  seed: int = 0, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Every procedure (length and random always among them) on every draw.

    Returns, per router, the mean / std / 10th and 90th percentiles over draws of
    its pooled APGR and CPT(50 %) on the held-out rows; for every router but the
    baselines also its paired APGR difference from length and the share of
    draws where it is at least length's; and how often each design was chosen.
    """
    routers: dict[str, Procedure] = {"length": length_procedure, "random": random_procedure,
                                     **procedures}
    got: dict[str, dict[str, list[float]]] = {n: {"apgr": [], "cpt50": []} for n in routers}
    chosen: dict[str, dict[str, int]] = {n: {} for n in routers}
    for k, (train, test) in enumerate(draws):
        weak, strong = data.weak[test], data.strong[test]
        if np.mean(weak) == np.mean(strong):
            continue  # PGR undefined on this draw
        for name, procedure in routers.items():
            scores, what = procedure(data, train, test, seed + 1 + k)
            got[name]["apgr"].append(apgr(scores, weak, strong))
            got[name]["cpt50"].append(cpt(scores, weak, strong, 0.5))
            chosen[name][what] = chosen[name].get(what, 0) + 1
        if (k + 1) % max(1, len(draws) // 10) == 0:
            progress(f"yardstick draw {k + 1}/{len(draws)}: "
                     + ", ".join(f"{n} {np.mean(v['apgr']):.3f}" for n, v in got.items()))
    length = np.asarray(got["length"]["apgr"])
    out: dict[str, Any] = {"draws": len(length), "routers": {}}
    for name, values in got.items():
        entry: dict[str, Any] = {"apgr": _spread(values["apgr"]),
                                 "cpt50": _spread(values["cpt50"])}
        if name not in ("length", "random"):
            diff = np.asarray(values["apgr"]) - length
            entry["apgr_minus_length"] = {**_spread(diff.tolist()),
                                          "share_at_least_length": float(np.mean(diff >= 0))}
            entry["chosen"] = dict(sorted(chosen[name].items(), key=lambda kv: -kv[1]))
        out["routers"][name] = entry
    return out
