"""Route, cascade and hybrid each choose as their thresholds say; thresholds validate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from cascade.confidence import confidence
from cascade.policy import Policy, reaches
from cascade.thresholds import ThresholdError, Thresholds, load_thresholds, save_thresholds

THREE = Thresholds(tiers=["small", "medium", "large"], thresholds={
    "route.medium": 0.4, "route.large": 0.7,
    "cascade.small": 0.8, "cascade.medium": 0.6,
    "hybrid.easy": 0.3, "hybrid.hard": 0.9,
})


@dataclass
class Reply:
    text: str
    confidence: float


def test_the_rule_is_at_or_above() -> None:
    assert reaches(0.5, 0.5)
    assert not reaches(0.49, 0.5)


@pytest.mark.parametrize(("score", "tier"), [
    (0.0, "small"), (0.39, "small"), (0.4, "medium"), (0.69, "medium"), (0.7, "large"),
    (1.0, "large"),
])
def test_route_picks_the_tier_by_score(score: float, tier: str) -> None:
    plan = Policy("route", THREE).plan(score)
    assert (plan.tier, plan.escalate) == (tier, False)


@pytest.mark.parametrize(("confidences", "tried"), [
    ({"small": 0.9}, ["small"]),
    ({"small": 0.8}, ["small"]),
    ({"small": 0.5, "medium": 0.7}, ["small", "medium"]),
    ({"small": 0.5, "medium": 0.1, "large": 0.0}, ["small", "medium", "large"]),
])
async def test_cascade_escalates_while_confidence_is_below_the_tier_threshold(
    confidences: dict[str, float], tried: list[str]
) -> None:
    policy = Policy("cascade", THREE)
    plan = policy.plan(None)
    assert (plan.tier, plan.escalate) == ("small", True)

    async def answer(tier: str) -> Reply:
        return Reply(f"from {tier}", confidences[tier])

    outcome = await policy.run(plan, answer)
    assert outcome.tiers_tried == tried
    assert outcome.tier == tried[-1]
    assert outcome.answer.text == f"from {tried[-1]}"


@pytest.mark.parametrize(("score", "tier", "escalate"), [
    (0.1, "small", False), (0.29, "small", False), (0.3, "small", True), (0.89, "small", True),
    (0.9, "large", False),
])
def test_hybrid_routes_the_ends_and_cascades_the_middle(
    score: float, tier: str, escalate: bool
) -> None:
    plan = Policy("hybrid", THREE).plan(score)
    assert (plan.tier, plan.escalate) == (tier, escalate)


async def test_hybrid_easy_prompt_keeps_a_shaky_answer() -> None:
    policy = Policy("hybrid", THREE)

    async def answer(tier: str) -> Reply:
        return Reply(tier, 0.0)

    assert (await policy.run(policy.plan(0.1), answer)).tiers_tried == ["small"]
    assert (await policy.run(policy.plan(0.5), answer)).tiers_tried == ["small", "medium",
                                                                      "large"]


def test_request_overrides_change_the_choice() -> None:
    policy = Policy("route", THREE)
    assert policy.plan(0.5).tier == "medium"
    assert policy.with_overrides(thresholds={"route.medium": 0.6}).plan(0.5).tier == "small"
    assert policy.with_overrides(policy="cascade").plan(0.99).tier == "small"
    assert policy.plan(0.1, force_tier="large").tier == "large"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"route.huge": 0.5}, "thresholds.route.huge: unknown threshold"),
    ({"cascade.large": 0.5}, "thresholds.cascade.large: unknown threshold"),
    ({"route.large": 1.5}, r"thresholds.route.large: must be in \[0, 1\]"),
    ({"route.large": "high"}, "thresholds.route.large: must be a number"),
    ({"route.medium": 0.8}, "route.large .* is below the tier before it"),
    ({"hybrid.easy": 0.95}, "hybrid.hard must not be below hybrid.easy"),
])
def test_bad_overrides_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        THREE.with_overrides(overrides)


def test_unknown_policy_and_tier_are_named() -> None:
    with pytest.raises(ThresholdError, match="policy: unknown policy 'fastest'"):
        Policy("fastest", THREE)
    with pytest.raises(ThresholdError, match="force_tier: unknown tier 'xl'"):
        Policy("route", THREE).plan(0.5, force_tier="xl")


def test_route_needs_a_score() -> None:
    with pytest.raises(ValueError, match="needs a classifier score"):
        Policy("route", THREE).plan(None)


def test_file_round_trip_and_version_check(tmp_path: Path) -> None:
    path = save_thresholds(THREE, tmp_path / "t.json")
    assert load_thresholds(path) == THREE
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "schema_version": 2}))
    with pytest.raises(ThresholdError, match="schema_version 2 is not supported"):
        load_thresholds(path)
    path.write_text(json.dumps({**raw, "thresholds": {**raw["thresholds"], "route.large": -0.1}}))
    with pytest.raises(ThresholdError, match=r"thresholds\.route\.large"):
        load_thresholds(path)


def test_shipped_default_loads_for_two_tiers() -> None:
    default = load_thresholds()
    assert default.tiers == ["small", "large"]
    assert Policy("hybrid", default).plan(0.0).tier == "small"


@pytest.mark.parametrize(("logprobs", "method", "expected"), [
    ([0.0, 0.0], "mean", 1.0),
    ([-1.0, -3.0], "mean", 0.1353352832),
    ([-1.0, -3.0], "min", 0.0497870684),
    ([], "mean", 0.0),
])
def test_confidence_from_logprobs(logprobs: list[float], method: str, expected: float) -> None:
    assert confidence(logprobs, method) == pytest.approx(expected)  # type: ignore[arg-type]
