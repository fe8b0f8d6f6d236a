"""TierAdmission alone, on a hand-driven clock (the one class; no mesh here)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.generation import Delta, GenerationRequest
from services.gateway.domain import TierCall
from services.gateway.tier_admission import AdmittedTier, TierAdmission, TierBusy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock, max_pending: int = 4, concurrency: int = 2) -> TierAdmission:
    return TierAdmission("small", max_pending, concurrency, min_start_s=0.1,
                         prior_service_s=1.0, alpha=0.5, clock=clock)


def test_free_slots_mean_no_wait_and_the_first_token_floor() -> None:
    a = admission(Clock())
    assert a.wait_s() == 0 and a.start_s() == pytest.approx(0.1)
    a.admit(5.0)
    assert a.wait_s() == 0 and a.pending == 1


def test_wait_grows_with_the_queue_beyond_concurrency() -> None:
    a = admission(Clock())
    for _ in range(2):
        a.admit(None)
    assert a.wait_s() == pytest.approx(0.5)  # one ahead, 1 s shared over 2 slots
    a.admit(None)
    assert a.wait_s() == pytest.approx(1.0)


def test_a_full_bound_refuses_with_the_time_a_slot_frees() -> None:
    clock = Clock()
    a = admission(clock)
    for _ in range(4):  # due at 1.0, 1.0, 1.5, 2.0
        a.admit(None)
    clock.now = 0.25
    with pytest.raises(TierBusy) as err:
        a.admit(60.0)
    assert err.value.retry_after_s == pytest.approx(0.75)  # the earliest due, from now
    assert "bound 4" in str(err.value) and err.value.kind.value == "RESOURCE_EXHAUSTED"
    clock.now = 5.0  # every call overdue: any moment, but not sooner than a start takes
    with pytest.raises(TierBusy) as err:
        a.admit(60.0)
    assert err.value.retry_after_s == pytest.approx(0.1)
    assert a.pending == 4


def test_a_deadline_before_the_estimated_start_is_refused() -> None:
    a = admission(Clock())
    with pytest.raises(TierBusy) as err:
        a.admit(0.05)  # shorter than the first-token floor, even with no queue
    assert "cannot start before the deadline" in str(err.value)
    a.admit(None)
    a.admit(None)
    with pytest.raises(TierBusy) as err:
        a.admit(0.5)  # waits 0.5 s, then needs 0.1 s to its first token
    assert err.value.retry_after_s == pytest.approx(0.5)
    a.admit(0.7)
    assert a.pending == 3


def test_only_finished_calls_that_did_not_wait_teach_the_estimate() -> None:
    clock = Clock()
    a = admission(clock)
    first, second, waited = a.admit(None), a.admit(None), a.admit(None)
    clock.now = 0.4
    first.first_token()
    clock.now = 3.0
    first.release(finished=True)       # service 3 s, first token 0.4 s: the EWMA moves
    assert a.service.value == pytest.approx(2.0) and a.first.value == pytest.approx(0.25)
    second.release(finished=False)     # failed or cancelled: slot freed, nothing learnt
    waited.release(finished=True)      # its time includes a wait: nothing learnt
    waited.release(finished=True)      # a second release is a no-op
    assert a.pending == 0 and a.service.samples == 1


class _Tier:
    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        self.calls += 1
        yield Delta(text="hi", token_ids=[1])
        yield Delta(finish_reason="stop", prompt_tokens=1, completion_tokens=1)


async def test_the_wrapped_tier_is_not_called_when_refused_and_frees_its_slot() -> None:
    inner = _Tier()
    a = admission(Clock(), max_pending=1, concurrency=1)
    tier = AdmittedTier(inner, a)
    call = TierCall(GenerationRequest(prompt="hi"), tenant="acme", timeout_s=5.0)
    assert [d.text async for d in tier.generate(call)] == ["hi", ""]
    assert a.pending == 0 and a.service.samples == 1
    a.admit(None)  # the bound is now full
    with pytest.raises(TierBusy):
        [d async for d in tier.generate(call)]
    assert inner.calls == 1
