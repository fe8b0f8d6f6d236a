"""Deadline-aware admission to one tier: a bound on the calls this gateway has in
flight or queued there, and an estimate of when a new call would finish.

    tier = AdmittedTier(BrokerTier("small", client), TierAdmission("small", 64, 8))
    async for delta in tier.generate(call):   # or TierBusy (RESOURCE_EXHAUSTED) at once
        ...

The estimate is Little's law over what this gateway measured itself: with
`pending` calls out and `concurrency` served at once, a new call waits for
`pending - concurrency + 1` of them to finish, each taking the mean service time
(`service_s`, an EWMA of the calls that found a free slot), shared over
`concurrency` slots. Then it needs its first token (`first_token_s`, likewise
measured, never below `min_start_s`) and its tokens: its own `max_tokens` times
the share of their limit that past calls used (an EWMA plus `DEVIATIONS` of its
deviation, at most 1; the completion length likewise where a call sets no
limit), at the measured time per token after the first. That time is fitted
against the calls out when each call's first token came (a decode step of a
batched engine takes longer the more sequences share it: on a CPU about in
proportion, on a GPU hardly until the batch is large), read at the calls that
would be out with the new one, plus `DEVIATIONS` of the fit's deviation: a call
admitted on means alone would run out its deadline just as load rises. A call
that finds the bound full, or whose deadline ends before that estimated finish
(before its estimated first token, while the tier has no call out), is refused
with `TierBusy`, whose `retry_after_s` is the estimated time until a slot frees
(the earliest expected finish of the calls out), or for a deadline too short,
until the queue ahead has drained. So no call is sent that could only expire in
the queue, or that would be cut at its deadline while slowing others, and
`refusal` answers the same question without taking a slot (the orchestrator asks
it before any other work, so an overloaded tier refuses in a few milliseconds).

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

DEVIATIONS = 2.0
"""Deviations added to the mean share of its limit a call uses and to the fitted time
per token, in the finish estimate: a bound most calls stay under, not their mean."""


class TierBusy(Overloaded):
    """A tier call refused before it was sent (RESOURCE_EXHAUSTED, with when to retry)."""

    def __init__(self, tier: str, why: str, retry_after_s: float) -> None:
        super().__init__(f"tier {tier!r} {why}; retry after "
                         f"{max(1, round(retry_after_s * 1000))} ms", retry_after_s)
        self.tier = tier


class Ewma:
    """Exponentially weighted mean and mean absolute deviation, from a prior mean."""

    def __init__(self, prior: float, alpha: float) -> None:
        self.value = prior
        self.deviation = 0.0
        self.alpha = alpha
        self.samples = 0

    def add(self, x: float) -> None:
        self.deviation += self.alpha * (abs(x - self.value) - self.deviation)
        self.value += self.alpha * (x - self.value)
        self.samples += 1

    def upper(self, k: float) -> float:
        """The mean plus `k` deviations: a bound most samples stay under."""
        return self.value + k * self.deviation


class LinearFit:
    """Exponentially weighted least squares of y on x (y = a + b x with b >= 0), and
    the mean absolute deviation of the samples from the fit; the prior until a
    first sample."""

    def __init__(self, prior: float, alpha: float) -> None:
        self.prior = prior
        self.alpha = alpha
        self.deviation = 0.0
        self.samples = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def predict(self, x: float) -> float:
        if not self._w:
            return self.prior
        mx, my = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mx * mx
        slope = max(0.0, (self._xy / self._w - mx * my) / var) if var > 1e-9 else 0.0
        return my + slope * (x - mx)

    def add(self, x: float, y: float) -> None:
        if self._w:
            self.deviation += self.alpha * (abs(y - self.predict(x)) - self.deviation)
        keep = 1 - self.alpha
        self._w = self._w * keep + 1
        self._x = self._x * keep + x
        self._y = self._y * keep + y
        self._xx = self._xx * keep + x * x
        self._xy = self._xy * keep + x * y
        self.samples += 1

    def upper(self, x: float, k: float) -> float:
        """The fit at `x` plus `k` deviations."""
        return self.predict(x) + k * self.deviation


@dataclass(eq=False)
class Slot:
    """One admitted call; `first_token()` and `finished()` feed the estimates."""

    owner: TierAdmission
    started: float
    queued: bool  # admitted with every slot taken: its times include a wait
    due: float    # when it is expected to finish (wait + service, at admission)
    max_tokens: int | None = None
    out: int = 1  # calls out on the tier as it started decoding, itself included
    first_at: float | None = None
    released: bool = False

    def first_token(self) -> None:
        if self.first_at is None:
            self.first_at = self.owner.clock()
            self.out = self.owner.pending

    def release(self, finished: bool, tokens: int = 0) -> None:
        """Free the slot; a call that `finished` (not failed or cancelled) with
        `tokens` completion tokens and did not wait teaches the estimator its service,
        first-token and per-token times and its length."""
        if self.released:
            return
        self.released = True
        owner = self.owner
        owner.slots.discard(self)
        if finished and not self.queued:
            now = owner.clock()
            owner.service.add(now - self.started)
            if tokens > 0:
                owner.tokens.add(tokens)
                if self.max_tokens:
                    owner.fill.add(min(1.0, tokens / self.max_tokens))
            if self.first_at is not None:
                owner.first.add(self.first_at - self.started)
                if tokens > 1:
                    owner.per_token.add(self.out, (now - self.first_at) / (tokens - 1))


class TierAdmission:
    """Counts this gateway's calls to one tier and estimates the next one's start."""

    def __init__(self, tier: str, max_pending: int, concurrency: int,
                 min_start_s: float = 0.1, prior_service_s: float = 1.0,
                 alpha: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 prior_tokens: float = 32, prior_token_s: float = 0.02,
                 prior_fill: float = 0.5) -> None:
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
        self.tokens = Ewma(prior_tokens, alpha)
        self.fill = Ewma(prior_fill, alpha)  # completion tokens over max_tokens
        self.per_token = LinearFit(prior_token_s, alpha)  # s a token, by calls out

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

    def finish_s(self, max_tokens: int | None = None) -> float:
        """Estimated time from now to the end of a new call of at most `max_tokens`:
        its start, then its expected length at the measured time per token."""
        tokens = (self.tokens.upper(DEVIATIONS) if max_tokens is None
                  else min(1.0, self.fill.upper(DEVIATIONS)) * max_tokens)
        per_token = self.per_token.upper(self.pending + 1, DEVIATIONS)
        return self.start_s() + max(0.0, tokens - 1) * per_token

    def slot_free_s(self) -> float:
        """Estimated time until the bound has room: the earliest expected finish among
        the calls out, never below `min_start_s` (one overdue may end any moment)."""
        if not self.slots:
            return self.min_start_s
        return max(self.min_start_s, min(s.due for s in self.slots) - self.clock())

    def refusal(self, timeout_s: float | None, max_tokens: int | None = None
                ) -> TierBusy | None:
        """Why a call with `timeout_s` left would be refused now (None: it would not)."""
        if self.pending >= self.max_pending:
            return TierBusy(self.tier, f"has {self.pending} calls in flight or queued "
                            f"(bound {self.max_pending})", self.slot_free_s())
        if timeout_s is None:
            return None
        # An idle tier starts any call that can start in time (it delays no one, and its
        # client may take what streams before its deadline); a busy one only calls that
        # can finish, since a call cut at its deadline slowed every call beside it.
        busy = self.pending > 0
        when, what = ((self.finish_s(max_tokens), "finish") if busy
                      else (self.start_s(), "start"))
        if when > timeout_s:
            retry = max(self.wait_s(), self.service.value / self.concurrency)
            return TierBusy(self.tier, f"cannot {what} before the deadline (estimated "
                            f"{what} in {round(when * 1000)} ms, "
                            f"{round(timeout_s * 1000)} ms left)", retry)
        return None

    def admit(self, timeout_s: float | None, max_tokens: int | None = None) -> Slot:
        """A slot for a call with `timeout_s` left, or `TierBusy`."""
        if (busy := self.refusal(timeout_s, max_tokens)) is not None:
            raise busy
        now = self.clock()
        slot = Slot(self, now, queued=self.pending >= self.concurrency,
                    due=now + self.wait_s() + self.service.value, max_tokens=max_tokens,
                    out=self.pending + 1)
        self.slots.add(slot)
        return slot


class AdmittedTier:
    """A tier client behind a `TierAdmission`: same interface, refuses at once."""

    def __init__(self, inner: TierClient, admission: TierAdmission) -> None:
        self.inner = inner
        self.admission = admission

    def refusal(self, call: TierCall) -> TierBusy | None:
        """Why `call` would be refused now, without taking a slot (None: admitted)."""
        return self.admission.refusal(call.timeout_s, call.request.sampling.max_tokens)

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        slot = self.admission.admit(call.timeout_s, call.request.sampling.max_tokens)
        finished, tokens = False, 0
        try:
            async for delta in self.inner.generate(call):
                if delta.text or delta.token_ids:
                    slot.first_token()
                if delta.finish_reason is not None:
                    finished, tokens = True, delta.completion_tokens
                yield delta
        finally:
            slot.release(finished, tokens)
