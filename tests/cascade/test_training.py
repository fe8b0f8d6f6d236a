"""Heads and designs on small synthetic data: what each training option promises."""

from __future__ import annotations

import numpy as np

from cascade.designs import CHOICE_DESIGNS, Design, subject_weights, within_group
from cascade.features import FEATURE_NAMES
from cascade.metrics import apgr
from cascade.selection import HeadData, choose, folds, nested
from cascade.training import fit_head

RNG = np.random.default_rng(0)
N = 600
FEATS = RNG.normal(size=(N, len(FEATURE_NAMES))).astype(np.float32)
GROUPS = np.asarray([f"s{i % 6}" for i in range(N)])
# The strong tier helps where "multi_step" is high: a form feature length cannot see.
SIGNAL = FEATS[:, FEATURE_NAMES.index("multi_step")]
STRONG = np.ones(N, dtype=bool)
WEAK = SIGNAL + RNG.normal(scale=0.5, size=N) < 0.3
DATA = HeadData(FEATS, None, WEAK, STRONG, GROUPS, by_group=True)


def test_ridge_head_predicts_like_its_pipeline() -> None:
    head = fit_head(CHOICE_DESIGNS["form-ridge"], FEATS, None, DATA.gain, GROUPS)
    np.testing.assert_allclose(head.predict(FEATS, None), head.model.predict(FEATS),
                               atol=1e-6)


def test_ensemble_stays_on_its_members_scale() -> None:
    members = {n: CHOICE_DESIGNS[n] for n in ("form-ridge", "form-gbm-monotone")}
    designs = {**members, "ens": Design("ens", model="ensemble", members=tuple(members))}
    heads = {n: fit_head(d, FEATS, None, DATA.gain, GROUPS) for n, d in members.items()}
    ens = fit_head(designs["ens"], FEATS, None, DATA.gain, GROUPS, member=heads.__getitem__)
    pred = ens.predict(FEATS, None)
    assert abs(pred.mean() - DATA.gain.mean()) < 0.1
    assert apgr(pred, WEAK, STRONG) > 0.7


def test_subject_weights_give_each_group_the_same_total() -> None:
    groups = np.asarray(["a"] * 3 + ["b"])
    weights = subject_weights(groups)
    assert weights[:3].sum() == weights[3:].sum()
    assert weights.mean() == 1.0
    np.testing.assert_allclose(within_group(np.asarray([1.0, 2.0, 3.0, 5.0]), groups),
                               [-1.0, 0.0, 1.0, 0.0])


def test_group_folds_never_split_a_subject() -> None:
    for train, test in folds(DATA, np.arange(N), 3, seed=0):
        assert not set(GROUPS[train]) & set(GROUPS[test])


def test_inner_loop_prefers_the_design_that_sees_the_signal() -> None:
    designs = {n: CHOICE_DESIGNS[n] for n in ("length-ridge", "form-ridge")}
    assert choose(DATA, np.arange(N), designs, 3, seed=0).design == "form-ridge"
    result = nested(DATA, designs, outer=3, inner=2)
    assert result.chosen == ["form-ridge"] * 3
    assert apgr(result.per_design["length-ridge"], WEAK, STRONG) < 0.6
    assert not np.isnan(result.scores).any()
    assert apgr(result.scores, WEAK, STRONG) > 0.7
