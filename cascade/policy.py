"""Routing policies over N >= 2 ordered tiers (cheapest first).

- `route`: the classifier score picks the tier; no escalation.
- `cascade`: start at the cheapest tier; while an answer's confidence is
  below that tier's `cascade.<tier>` threshold, try the next tier.
- `hybrid`: a score below `hybrid.easy` stays on the cheapest tier, a score at
  or above `hybrid.hard` goes to the most capable tier, and the middle is
  cascaded.

Every comparison goes through `reaches` (value >= threshold), the one
decision rule. The gateway asks `plan()` where to start, generates there, and
asks `next_tier()` whether to escalate; `run()` does the loop for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

from cascade.thresholds import ThresholdError, Thresholds

PolicyName = Literal["route", "cascade", "hybrid"]
POLICIES: tuple[str, ...] = get_args(PolicyName)


def reaches(value: float, threshold: float) -> bool:
    """The decision rule, written once: a value at or above its threshold passes."""
    return value >= threshold


@dataclass(frozen=True)
class Plan:
    """Where a request starts and whether low confidence may move it up."""

    policy: str
    tier: str
    escalate: bool
    score: float | None = None


class Answer(Protocol):
    """What the cascade needs from a tier's answer."""

    @property
    def confidence(self) -> float: ...


A = TypeVar("A", bound=Answer)


@dataclass
class Outcome(Generic[A]):
    """The answer kept, the tier it came from, and every tier tried in order."""

    answer: A
    tier: str
    tiers_tried: list[str] = field(default_factory=list)


class Policy:
    """One policy with its thresholds; immutable, cheap to make per request."""

    def __init__(self, name: str, thresholds: Thresholds) -> None:
        if name not in POLICIES:
            raise ThresholdError(f"policy: unknown policy {name!r}; known: {list(POLICIES)}")
        self.name: str = name
        self.thresholds = thresholds
        self.tiers: list[str] = list(thresholds.tiers)

    def with_overrides(
        self, policy: str | None = None, thresholds: Mapping[str, Any] | None = None
    ) -> Policy:
        """This policy with a request's overrides (empty values keep the configured ones)."""
        return Policy(policy or self.name, self.thresholds.with_overrides(thresholds or {}))

    def needs_score(self) -> bool:
        """Whether `plan()` needs a classifier score (the cascade does not)."""
        return self.name != "cascade"

    def route_tier(self, score: float) -> str:
        """The most capable tier whose `route.<tier>` threshold the score reaches."""
        chosen = self.tiers[0]
        for tier in self.tiers[1:]:
            if reaches(score, self.thresholds.route(tier)):
                chosen = tier
        return chosen

    def plan(self, score: float | None, force_tier: str | None = None) -> Plan:
        """Where to start for a prompt with classifier `score` (P(cheap tier not enough))."""
        if force_tier:
            if force_tier not in self.tiers:
                raise ThresholdError(
                    f"force_tier: unknown tier {force_tier!r}; known: {self.tiers}"
                )
            return Plan(self.name, force_tier, escalate=False, score=score)
        if self.name == "cascade":
            return Plan(self.name, self.tiers[0], escalate=True, score=score)
        if score is None:
            raise ValueError(f"the {self.name} policy needs a classifier score")
        if self.name == "route":
            return Plan(self.name, self.route_tier(score), escalate=False, score=score)
        if not reaches(score, self.thresholds.thresholds["hybrid.easy"]):
            return Plan(self.name, self.tiers[0], escalate=False, score=score)
        if reaches(score, self.thresholds.thresholds["hybrid.hard"]):
            return Plan(self.name, self.tiers[-1], escalate=False, score=score)
        return Plan(self.name, self.tiers[0], escalate=True, score=score)

    def next_tier(self, plan: Plan, tier: str, confidence: float) -> str | None:
        """The tier to escalate to after `tier` answered with `confidence`, or None to keep it."""
        index = self.tiers.index(tier)
        if not plan.escalate or index == len(self.tiers) - 1:
            return None
        if reaches(confidence, self.thresholds.cascade(tier)):
            return None
        return self.tiers[index + 1]

    async def run(self, plan: Plan, answer: Callable[[str], Awaitable[A]]) -> Outcome[A]:
        """Ask `answer(tier)` from the plan's tier on, escalating as `next_tier` says."""
        tier: str | None = plan.tier
        tried: list[str] = []
        while tier is not None:
            tried.append(tier)
            result = await answer(tier)
            step = self.next_tier(plan, tier, result.confidence)
            if step is None:
                return Outcome(answer=result, tier=tier, tiers_tried=tried)
            tier = step
        raise AssertionError("unreachable: the loop returns at the last tier")
