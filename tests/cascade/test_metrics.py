"""APGR, CPT and calibration on hand-made tables whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.metrics import accuracy_curve, apgr, cpt, oracle_scores, summarize
from cascade.thresholds import Thresholds
from cascade.tuning import Target, calibrate, share_for_quality, threshold_for_share

# Ten prompts: 4 only the strong tier gets right (gain +1), 4 both get right,
# 2 both get wrong. acc_weak = 0.4, acc_strong = 0.8.
WEAK = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
STRONG = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
GAIN = STRONG.astype(float) - WEAK.astype(float)


def test_oracle_recovers_the_gap_with_forty_percent_of_calls() -> None:
    # PGR 0.25, 0.5, 0.75, 1.0 at 10..40 %, then 1.0: area 0.2 + 0.6.
    assert apgr(oracle_scores(WEAK, STRONG), WEAK, STRONG) == pytest.approx(0.8)
    assert cpt(GAIN, WEAK, STRONG, 0.5) == pytest.approx(0.2)
    assert cpt(GAIN, WEAK, STRONG, 0.8) == pytest.approx(0.4)


def test_random_router_is_exactly_one_half() -> None:
    scores = np.full(10, 0.3)
    assert apgr(scores, WEAK, STRONG) == pytest.approx(0.5)
    assert cpt(scores, WEAK, STRONG, 0.5) == pytest.approx(0.5)
    assert cpt(scores, WEAK, STRONG, 0.8) == pytest.approx(0.8)
    np.testing.assert_allclose(accuracy_curve(scores, WEAK, STRONG), np.linspace(0.4, 0.8, 11))


def test_perfect_inverse_router_sends_the_useful_prompts_last() -> None:
    # The six zero-gain prompts tie and go first (PGR 0 up to 60 %), then
    # 0.25 .. 1.0 from 70 to 100 %: area 0.0125 + 0.0375 + 0.0625 + 0.0875.
    assert apgr(-GAIN, WEAK, STRONG) == pytest.approx(0.2)
    assert cpt(-GAIN, WEAK, STRONG, 0.5) == pytest.approx(0.8)


def test_summary_puts_random_and_oracle_beside_the_router() -> None:
    summary = summarize(GAIN, WEAK, STRONG)
    assert summary.n == 10
    assert (summary.acc_weak, summary.acc_strong) == pytest.approx((0.4, 0.8))
    assert summary.apgr == pytest.approx(summary.oracle_apgr)
    assert summary.random_apgr == pytest.approx(0.5)


def test_pgr_is_undefined_when_both_tiers_score_alike() -> None:
    with pytest.raises(ValueError, match="acc_strong equals acc_weak"):
        apgr(np.zeros(3), np.array([1, 0, 0]), np.array([0, 1, 0]))


def test_threshold_for_share_sends_that_share_strong() -> None:
    scores = np.linspace(0.05, 0.95, 10)
    for share in (0.0, 0.3, 0.5, 1.0):
        threshold = threshold_for_share(scores, share)
        assert np.mean(scores >= threshold) == pytest.approx(share)
    assert threshold_for_share(scores, 0.3) == pytest.approx(0.75)


def test_quality_target_becomes_the_smallest_sufficient_share() -> None:
    # 75 % of acc_strong is 0.6: the oracle reaches it with 2 of 10 calls.
    assert share_for_quality(GAIN, WEAK, STRONG, 0.75) == pytest.approx(0.2)
    # The random router needs half the calls for 0.6.
    assert share_for_quality(np.zeros(10), WEAK, STRONG, 0.75) == pytest.approx(0.5)
    assert share_for_quality(GAIN, WEAK, STRONG, 0.0) == 0.0


def test_calibrate_sets_route_and_hybrid_band_from_quantiles() -> None:
    base = Thresholds(tiers=["small", "large"], thresholds={
        "route.large": 0.5, "cascade.small": 0.7, "hybrid.easy": 0.4, "hybrid.hard": 0.6})
    scores = np.linspace(0.1, 1.0, 10)
    tuned = calibrate(base, scores, share=0.3, band=0.1)
    assert tuned.route("large") == pytest.approx(0.8)
    assert tuned.thresholds["hybrid.easy"] == pytest.approx(0.7)
    assert tuned.thresholds["hybrid.hard"] == pytest.approx(0.9)
    assert tuned.cascade("small") == 0.7


@pytest.mark.parametrize(("text", "expected"), [
    ("strong-fraction=0.3", Target("strong-fraction", 0.3)),
    ("quality=0.95", Target("quality", 0.95)),
])
def test_target_parses(text: str, expected: Target) -> None:
    assert Target.parse(text) == expected


@pytest.mark.parametrize("text", ["cost=0.3", "quality=1.5", "strong-fraction=x", "0.3"])
def test_bad_target_is_rejected_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--target"):
        Target.parse(text)
