"""The δ -> bound derivation on synthetic calibration outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache.calibration import (
    Outcomes,
    derive_bound,
    lowest_keeping,
    realised_share,
    shift_allowance,
    shifted_bound,
)


def outcomes(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.beta(0.2, 0.2, n)
    right = rng.uniform(0, 1, n) < probs  # calibrated: P(right) = p
    return probs, right


def test_bound_keeps_wrong_share_under_delta() -> None:
    probs, right = outcomes()
    for delta in (0.02, 0.05, 0.1):
        b = derive_bound(probs, right, int(right.sum()), delta)
        hit = probs >= b.threshold
        assert (~right[hit]).mean() <= delta
        assert b.expected_wrong_share <= delta
        assert b.calib_hits == int(hit.sum())


def test_smaller_delta_means_stricter_bound() -> None:
    probs, right = outcomes()
    loose = derive_bound(probs, right, int(right.sum()), 0.1)
    strict = derive_bound(probs, right, int(right.sum()), 0.02)
    assert strict.threshold > loose.threshold
    assert strict.expected_hit_rate < loose.expected_hit_rate


def test_unreachable_delta_means_no_hits() -> None:
    probs = np.linspace(0, 1, 100)
    right = np.zeros(100, dtype=bool)
    b = derive_bound(probs, right, 0, 0.05)
    assert b.threshold == 1.0 and b.expected_hit_rate == 0.0
    with pytest.raises(ValueError):
        derive_bound(probs, right, 0, 0.0)


def form(seed: int, overconfident: float = 0.0, n: int = 4000) -> Outcomes:
    """Calibrated outcomes, or (overconfident > 0) a form whose scores run high: its
    rows are right less often than their probability says."""
    probs, right = outcomes(n, seed)
    right = right & (np.random.default_rng(seed + 1).uniform(0, 1, n) >= overconfident)
    return Outcomes(probs, right, int(right.sum()), f"form {seed}")


def left_out_keeps(forms: list[Outcomes], delta: float, allowance: float) -> bool:
    """Whether every form keeps `delta` at the bound of the others plus `allowance`."""
    for held in range(len(forms)):
        rest = Outcomes.pooled([f for i, f in enumerate(forms) if i != held])
        bound = derive_bound(rest.prob, rest.right, rest.n_positive, delta)
        if realised_share(forms[held].prob, forms[held].right,
                          bound.threshold + allowance) > delta:
            return False
    return True


def test_forms_that_agree_need_little_allowance() -> None:
    pooled = Outcomes.pooled([form(1), form(2), form(3)])
    plain = derive_bound(pooled.prob, pooled.right, pooled.n_positive, 0.05)
    shifted = shifted_bound(pooled, 0.05)
    assert shift_allowance(pooled, 0.05) < 0.01
    assert shifted.threshold == pytest.approx(plain.threshold + shifted.shift_allowance)


def test_a_form_unlike_the_others_raises_the_bound_until_it_is_kept() -> None:
    forms = [form(1), form(2), form(3, overconfident=0.04)]
    pooled = Outcomes.pooled(forms)
    plain = derive_bound(pooled.prob, pooled.right, pooled.n_positive, 0.05)
    shifted = shifted_bound(pooled, 0.05)
    assert shifted.shift_allowance > 0.01 and shifted.delta == 0.05
    assert shifted.threshold > plain.threshold
    assert shifted.expected_wrong_share <= 0.05
    assert left_out_keeps(forms, 0.05, shifted.shift_allowance)  # what it was chosen for
    assert not left_out_keeps(forms, 0.05, 0.0)


def test_lowest_keeping_threshold() -> None:
    o = Outcomes(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, True]), 3)
    assert lowest_keeping(o, 0.0, 0.25) == 0.0  # 1 wrong of 4
    assert lowest_keeping(o, 0.0, 0.2) == 0.9  # 1 of 2 and 1 of 3 are too many
    assert lowest_keeping(o, 0.65, 0.2) == 0.9


def test_one_form_has_nothing_to_cross_check_and_forms_survive_a_file(tmp_path: Path) -> None:
    assert shift_allowance(form(1), 0.05) == 0.0
    pooled = Outcomes.pooled([form(1), form(2, overconfident=0.04)])
    pooled.save(tmp_path / "t.npz")
    again = Outcomes.load(tmp_path / "t.npz")
    assert again.forms == ("form 1", "form 2") and again.positives == pooled.positives
    assert shift_allowance(again, 0.05) == shift_allowance(pooled, 0.05)


def test_the_shipped_table_keeps_delta_on_each_calibration_form_left_out() -> None:
    from cache.verifier import CONFIDENCE, CrossVerifier

    table = CrossVerifier.load().calibration
    assert table is not None and len(table.forms) >= 4
    forms = table.split_forms()
    for delta in (0.02, 0.05, 0.1):
        allowance = shift_allowance(table, delta, CONFIDENCE)
        for held in range(len(forms)):
            rest = Outcomes.pooled([f for i, f in enumerate(forms) if i != held])
            start = derive_bound(rest.prob, rest.right, rest.n_positive, delta,
                                 CONFIDENCE).threshold
            assert realised_share(forms[held].prob, forms[held].right,
                                  min(1.0, start + allowance)) <= delta
