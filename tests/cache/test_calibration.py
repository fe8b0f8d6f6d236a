"""The δ -> bound derivation on synthetic calibration outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from cache.calibration import derive_bound


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
