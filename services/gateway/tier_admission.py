"""Deadline-aware admission to one tier: a bound on the calls this gateway has in
flight or queued there, and an estimate of when a new call would start.

    tier = AdmittedTier(BrokerTier("small", client), TierAdmission("small", 64, 8))
    async for delta in tier.generate(call):   # or TierBusy (RESOURCE_EXHAUSTED) at once
        ...

The estimate is Little's law over what this gateway measured itself: with
`pending` calls out and `concurrency` served at once, a new call waits for
`pending - concurrency + 1` of them to finish, each taking the mean service time
(`service_s`, an EWMA of the calls that found a free slot), shared over
`concurrency` slots; then it needs its first token (`first_token_s`, likewise
measured, never below `min_start_s`). A call whose deadline ends before that, or
that finds the bound full, is refused with `TierBusy`, whose `retry_after_s` is
the estimated time until a slot frees (the earliest expected finish of the calls
out), or for a deadline too short, until the queue ahead has drained.
So nothing is sent that could only expire in the queue or at a backend.

The bound is per gateway replica: each replica counts only the calls it sent.
Per-tenant fairness stays with the rate limit (`admission`) and the broker's
scheduler; this bound is the same for every tenant.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from core.errors import Overloaded
from core.generation import Delta
from services.gateway.domain import TierCall, TierClient


class TierBusy(Overloaded):
    """A tier call refused before it was sent (RESOURCE_EXHAUSTED, with when to retry)."""

    def __init__(self, tier: str, why: str, retry_after_s: float) -> None:
        super().__init__(f"tier {tier!r} {why}; retry after "
                         f"{max(1, round(retry_after_s * 1000))} ms", retry_after_s)
        self.tier = tier


class Ewma:
    """Exponentially weighted mean, starting from a prior."""

    def __init__(self, prior: float, alpha: float) -> None:
        self.value = prior
        self.alpha = alpha
        self.samples = 0

    def add(self, x: float) -> None:
        self.value += self.alpha * (x - self.value)
        self.samples += 1


@dataclass(eq=False)
class Slot:
    """One admitted call; `first_token()` and `finished()` feed the estimates."""

    owner: TierAdmission
    started: float
    queued: bool  # admitted with every slot taken: its times include a wait
    due: float    # when it is expected to finish (wait + service, at admission)
    first_at: float | None = None
    released: bool = False

    def first_token(self) -> None:
        if self.first_at is None:
            self.first_at = self.owner.clock()

    def release(self, finished: bool) -> None:
        """Free the slot; a call that `finished` (not failed or cancelled) and did not
        wait teaches the estimator its service and first-token times."""
        if self.released:
            return
        self.released = True
        self.owner.slots.discard(self)
        if finished and not self.queued:
            now = self.owner.clock()
            self.owner.service.add(now - self.started)
            if self.first_at is not None:
                self.owner.first.add(self.first_at - self.started)


class TierAdmission:
    """Counts this gateway's calls to one tier and estimates the next one's start."""

    def __init__(self, tier: str, max_pending: int, concurrency: int,
                 min_start_s: float = 0.1, prior_service_s: float = 1.0,
                 alpha: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        if max_pending < 1 or concurrency < 1:
            raise ValueError("max_pending and concurrency must be >= 1")
        self.tier = tier
        self.max_pending = max_pending
        self.concurrency = concurrency
        self.min_start_s = min_start_s
        self.clock = clock
        self.slots: set[Slot] = set()
        self.service = Ewma(prior_service_s, alpha)
        self.first = Ewma(min_start_s, alpha)

    @property
    def pending(self) -> int:
        """Calls admitted and not yet released (in flight or queued)."""
        return len(self.slots)

    def wait_s(self) -> float:
        """Estimated wait of a call admitted now before a slot serves it."""
        ahead = self.pending - self.concurrency + 1
        return max(0, ahead) * self.service.value / self.concurrency

    def start_s(self) -> float:
        """Estimated time from now to a new call's first token."""
        return self.wait_s() + max(self.min_start_s, self.first.value)

    def slot_free_s(self) -> float:
        """Estimated time until the bound has room: the earliest expected finish among
        the calls out, never below `min_start_s` (one overdue may end any moment)."""
        if not self.slots:
            return self.min_start_s
        return max(self.min_start_s, min(s.due for s in self.slots) - self.clock())

    def admit(self, timeout_s: float | None) -> Slot:
        """A slot for a call with `timeout_s` left, or `TierBusy`."""
        if self.pending >= self.max_pending:
            raise TierBusy(self.tier, f"has {self.pending} calls in flight or queued "
                           f"(bound {self.max_pending})", self.slot_free_s())
        start = self.start_s()
        if timeout_s is not None and start > timeout_s:
            retry = max(self.wait_s(), self.service.value / self.concurrency)
            raise TierBusy(self.tier, f"cannot start before the deadline (estimated first "
                           f"token in {round(start * 1000)} ms, {round(timeout_s * 1000)} ms "
                           f"left)", retry)
        now = self.clock()
        slot = Slot(self, now, queued=self.pending >= self.concurrency,
                    due=now + self.wait_s() + self.service.value)
        self.slots.add(slot)
        return slot


class AdmittedTier:
    """A tier client behind a `TierAdmission`: same interface, refuses at once."""

    def __init__(self, inner: TierClient, admission: TierAdmission) -> None:
        self.inner = inner
        self.admission = admission

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        slot = self.admission.admit(call.timeout_s)
        finished = False
        try:
            async for delta in self.inner.generate(call):
                if delta.text or delta.token_ids:
                    slot.first_token()
                if delta.finish_reason is not None:
                    finished = True
                yield delta
        finally:
            slot.release(finished)
