"""The length backbone and the yardstick on small synthetic data: what each promises."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.backbone import LOG_CHARS, BackboneDesign, candidates, choose_backbone, fit_backbone
from cascade.features import FEATURE_NAMES
from cascade.metrics import apgr
from cascade.selection import HeadData, folds
from cascade.training import Artifact
from cascade.yardstick import (
    backbone_procedure,
    prompt_draws,
    run_yardstick,
    subject_draws,
)

RNG = np.random.default_rng(1)
N = 900
FEATS = RNG.normal(size=(N, len(FEATURE_NAMES))).astype(np.float32)
GROUPS = np.asarray([f"s{i % 9}" for i in range(N)])
STEP = FEATURE_NAMES.index("multi_step")
# The strong tier helps on long prompts, and more where "multi_step" is high.
SIGNAL = FEATS[:, LOG_CHARS] + FEATS[:, STEP]
STRONG = np.ones(N, dtype=bool)
WEAK = SIGNAL + RNG.normal(scale=0.7, size=N) < 0.0
# Embeddings: one direction per group, so each group has its own centroid.
EMB = (np.eye(16)[np.arange(N) % 9] + RNG.normal(scale=0.3, size=(N, 16))).astype(np.float32)
DATA = HeadData(FEATS, EMB, WEAK, STRONG, GROUPS, by_group=True)
LENGTH_ONLY = HeadData(FEATS, EMB, FEATS[:, LOG_CHARS] + RNG.normal(scale=0.7, size=N) < 0,
                       STRONG, GROUPS, by_group=True)


def test_weight_zero_ranks_exactly_like_length() -> None:
    model = fit_backbone(BackboneDesign("form-ridge", 0.0), FEATS, None, DATA.gain, GROUPS)
    scores = model.score(FEATS, None)
    assert not model.uses_embedding
    assert np.all((scores > 0) & (scores < 1))
    assert apgr(scores, WEAK, STRONG) == pytest.approx(apgr(FEATS[:, LOG_CHARS], WEAK, STRONG))


def test_a_correction_that_transfers_is_chosen_and_beats_length() -> None:
    rows = np.arange(N)
    made = choose_backbone(FEATS, EMB, WEAK, STRONG, GROUPS, folds(DATA, rows, 3, 0),
                           candidates(["form-ridge", "form-ridge-within"]))
    assert made.design.weight > 0
    assert made.inner_apgr[made.design.name] > made.inner_apgr["backbone:length"]
    assert not np.isnan(made.oof).any()


def test_without_a_transferable_correction_the_choice_stays_near_length() -> None:
    rows = np.arange(N)
    made = choose_backbone(FEATS, EMB, LENGTH_ONLY.weak, STRONG, GROUPS,
                           folds(LENGTH_ONLY, rows, 3, 0), candidates(["form-ridge"]))
    length = apgr(FEATS[:, LOG_CHARS], LENGTH_ONLY.weak, STRONG)
    assert apgr(made.oof, LENGTH_ONLY.weak, STRONG) >= length - 0.02


def test_centroid_shrink_is_lower_for_prompts_unlike_the_training_groups() -> None:
    train = GROUPS != "s8"
    model = fit_backbone(BackboneDesign("form-ridge", 1.0, "centroid"), FEATS[train],
                         EMB[train], DATA.gain[train], GROUPS[train])
    assert model.uses_embedding
    parts = model.terms.parts(FEATS, EMB)
    assert parts.shrink is not None
    seen = parts.shrink[GROUPS == "s0"].mean()
    unseen = parts.shrink[GROUPS == "s8"].mean()
    far = model.terms.parts(FEATS[:5], np.tile(np.eye(16)[15], (5, 1))).shrink  # no group's
    assert far is not None and far.max() < unseen < seen


def test_an_artifact_of_backbone_heads_scores_prompts() -> None:
    model = fit_backbone(BackboneDesign("form-ridge", 1.0), FEATS, None, DATA.gain, GROUPS)
    artifact = Artifact(heads={"choice": model, "open": model}, feature_names=list(FEATURE_NAMES))
    scores = artifact.predict(["A short one?", "A longer prompt " * 40], None)
    assert scores.dtype == np.float32 and np.all((scores > 0) & (scores < 1))
    assert scores[1] > scores[0]


def test_subject_draws_hold_out_whole_groups_and_prompt_draws_a_share() -> None:
    for train, test in subject_draws(GROUPS, k=3, n=5, seed=0):
        assert len(set(GROUPS[test])) == 3
        assert not set(GROUPS[train]) & set(GROUPS[test])
        assert len(train) + len(test) == N
    draws = prompt_draws(100, 0.2, n=4, seed=0)
    assert all(len(test) == 20 and not set(train) & set(test) for train, test in draws)
    assert len({tuple(test) for _, test in draws}) == 4
    with pytest.raises(ValueError, match="hold out"):
        subject_draws(GROUPS, k=9)


def test_yardstick_reports_spread_and_the_paired_difference_from_length() -> None:
    draws = subject_draws(GROUPS, k=3, n=6, seed=0)
    report = run_yardstick(DATA, {"backbone": backbone_procedure(
        candidates(["form-ridge"], weights=(0.0, 1.0, 4.0), shrinks=("none",)), inner=3)},
        draws)
    routers = report["routers"]
    assert report["draws"] == 6
    assert routers["random"]["apgr"]["mean"] == pytest.approx(0.5)
    backbone = routers["backbone"]
    assert backbone["apgr"]["std"] > 0
    assert backbone["apgr_minus_length"]["mean"] == pytest.approx(
        backbone["apgr"]["mean"] - routers["length"]["apgr"]["mean"])
    assert backbone["apgr_minus_length"]["mean"] > 0
    assert sum(backbone["chosen"].values()) == 6
