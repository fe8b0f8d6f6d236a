"""The δ promise checked on the operator's own traffic: audited hits per tenant.

A share of hits is re-asked, off the critical path, to a judge (a strong tier,
or a scripted judge in tests) that says whether the cached prompt and the new
one ask the same thing. The verdicts of a tenant's recent audited hits give a
live estimate of its wrong-hit share with a two-sided Clopper-Pearson
interval. When the interval's lower limit passes δ (the promise is broken with
that confidence) the tenant's bound tightens one step: hits then need the
verifier probability that calibration gives for δ / 2, then δ / 4, ... When its
upper limit is back under δ on enough verdicts at a tightened step, the bound
relaxes one step. Each change starts a fresh window, so the estimate always
describes the bound in force. Other tenants are untouched.

Verdicts on near-misses (a best candidate just under the bound) are counted
apart: the share the judge calls the same is the recall the bound gives up.

State lives in this replica's memory (a restart starts from the shipped bound).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from scipy.stats import beta


def clopper_pearson(wrong: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of wrong/n at `confidence` ((0, 1) for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if wrong == 0 else float(beta.ppf(tail, wrong, n - wrong + 1))
    high = 1.0 if wrong == n else float(beta.ppf(1 - tail, wrong + 1, n - wrong))
    return low, high


@dataclass(frozen=True)
class AuditConfig:
    """How hits are audited and how the bound follows the verdicts."""

    window: int = 200           # a tenant's latest verdicts on hits that count
    min_verdicts: int = 20      # fewer than this never relaxes a bound
    confidence: float = 0.9     # of the interval
    max_steps: int = 6          # at most δ / 2**max_steps


@dataclass(frozen=True)
class Estimate:
    """A tenant's audited wrong-hit share at the bound in force."""

    tenant: str
    verdicts: int
    wrong: int
    low: float
    high: float
    step: int               # 0: the shipped bound; k: calibrated for δ / 2**k
    effective_delta: float
    threshold: float
    near_misses: int
    near_misses_same: int

    @property
    def share(self) -> float:
        return self.wrong / self.verdicts if self.verdicts else 0.0


@dataclass
class _Tenant:
    verdicts: deque[bool] = field(default_factory=deque)  # True: a wrong hit
    step: int = 0
    near_misses: int = 0
    near_misses_same: int = 0


class AuditBook:
    """Per-tenant verdicts and the bound each tenant's hits need now."""

    def __init__(self, delta: float, threshold_for: Callable[[float], float],
                 config: AuditConfig | None = None) -> None:
        self.delta = delta
        self.config = config or AuditConfig()
        self._threshold_for = threshold_for  # δ -> the calibrated verifier bound
        self._tenants: dict[str, _Tenant] = {}

    def threshold(self, tenant: str) -> float:
        """The verifier probability a hit of `tenant` needs now."""
        return self._threshold_for(self._delta_at(self._step(tenant)))

    def record(self, tenant: str, *, hit: bool, same: bool) -> Estimate:
        """One verdict: on a hit (`same` False is a wrong hit) or a near-miss."""
        state = self._tenants.setdefault(tenant, _Tenant())
        if not hit:
            state.near_misses += 1
            state.near_misses_same += same
            return self.estimate(tenant)
        state.verdicts.append(not same)
        while len(state.verdicts) > self.config.window:
            state.verdicts.popleft()
        now = self.estimate(tenant)
        if now.low > self.delta and state.step < self.config.max_steps:
            self._move(state, +1)
        elif (state.step > 0 and now.verdicts >= self.config.min_verdicts
              and now.high < self.delta):
            self._move(state, -1)
        return self.estimate(tenant)

    def estimate(self, tenant: str) -> Estimate:
        state = self._tenants.get(tenant, _Tenant())
        wrong, n = sum(state.verdicts), len(state.verdicts)
        low, high = clopper_pearson(wrong, n, self.config.confidence)
        delta = self._delta_at(state.step)
        return Estimate(tenant, n, wrong, low, high, state.step, delta,
                        self._threshold_for(delta), state.near_misses,
                        state.near_misses_same)

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def _step(self, tenant: str) -> int:
        state = self._tenants.get(tenant)
        return state.step if state is not None else 0

    def _delta_at(self, step: int) -> float:
        return self.delta / 2 ** step

    @staticmethod
    def _move(state: _Tenant, by: int) -> None:
        state.step += by
        state.verdicts.clear()  # the estimate describes the bound in force
