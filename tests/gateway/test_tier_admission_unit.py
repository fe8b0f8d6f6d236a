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


def test_a_deadline_before_the_estimated_finish_is_refused() -> None:
    a = admission(Clock())  # idle: 0.1 s to the first token, then 31 tokens at 20 ms
    assert a.finish_s() == pytest.approx(0.72)
    assert a.finish_s(64) == pytest.approx(0.72)  # half its limit, until measured
    with pytest.raises(TierBusy) as err:
        a.admit(0.05)  # shorter than the first-token floor, even with no queue
    assert "cannot start before the deadline" in str(err.value)
    idle = a.admit(0.5)  # idle: it can start in time; its client may take what streams
    with pytest.raises(TierBusy) as err:
        a.admit(0.5)  # busy: it starts in time, but its expected length does not fit
    assert "cannot finish before the deadline" in str(err.value)
    idle.release(finished=False)
    a.admit(None)
    a.admit(0.5, max_tokens=4)  # a short answer fits
    with pytest.raises(TierBusy) as err:
        a.admit(1.0)  # waits 0.5 s, then 0.72 s of its own
    assert err.value.retry_after_s == pytest.approx(0.5)
    a.admit(1.3)
    assert a.pending == 3


def test_refusal_says_what_admit_would_do_without_taking_a_slot() -> None:
    a = admission(Clock(), max_pending=1)
    assert a.refusal(5.0) is None and a.pending == 0
    a.admit(5.0)
    busy = a.refusal(5.0)
    assert isinstance(busy, TierBusy) and "bound 1" in str(busy) and a.pending == 1


def test_only_finished_calls_that_did_not_wait_teach_the_estimate() -> None:
    clock = Clock()
    a = admission(clock)
    first, second, waited = a.admit(None, max_tokens=14), a.admit(None), a.admit(None)
    clock.now = 0.4
    first.first_token()
    clock.now = 3.0
    first.release(finished=True, tokens=14)  # 3 s, first token at 0.4 s, 13 more tokens
    assert a.service.value == pytest.approx(2.0) and a.first.value == pytest.approx(0.25)
    assert a.tokens.value == pytest.approx(23) and a.per_token.predict(1) == pytest.approx(0.2)
    assert a.fill.value == pytest.approx(0.75)  # it used its whole limit: 0.5 -> 0.75
    # one ahead: 1 s; its share of the limit 0.75 + 2 x 0.25 deviation: all of it;
    # then 99 tokens at the one sample's 0.2 s (no deviation from the fit yet)
    assert a.fill.deviation == pytest.approx(0.25)
    assert a.finish_s(100) == pytest.approx(1.0 + 0.25 + 99 * 0.2)
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


async def test_the_orchestrator_refuses_before_scoring_when_no_tier_admits() -> None:
    """Every tier full: refused at once, the classifier never asked; one tier with
    room: the call goes through to the plan."""
    from cascade.policy import Policy
    from services.gateway.orchestrator import Orchestrator, OrchestratorConfig
    from tests.gateway.fakes import FakeClassifier, FakeTier
    from tests.gateway.test_orchestrator import THRESHOLDS, ask, q

    gates = {t: admission(Clock(), max_pending=1, concurrency=1) for t in ("small", "large")}
    tiers = {t: AdmittedTier(FakeTier(t), gates[t]) for t in gates}
    classifier = FakeClassifier()
    orch = Orchestrator(Policy("route", THRESHOLDS), None, classifier, tiers,
                        OrchestratorConfig(tier_prices={"small": 0.1, "large": 1.0}))
    held = [gates[t].admit(None) for t in gates]
    with pytest.raises(TierBusy) as err:
        await ask(orch, q("easy one"))
    assert classifier.calls == 0 and err.value.retry_after_s > 0
    held[1].release(finished=False)  # large has room again; easy still routes small
    with pytest.raises(TierBusy):
        await ask(orch, q("easy one"))
    assert classifier.calls == 1  # scored this time: refused by its tier, not before
    text, meta, _ = await ask(orch, q("hard one"))
    assert meta.tier == "large" and text.startswith("large:")


def test_the_time_per_token_is_read_at_the_calls_that_would_be_out() -> None:
    """Calls that started alone decoded at 50 ms a token, four at once at 200 ms: with
    eight out, a new call's tokens are estimated at about 400 ms, not the mean."""
    clock = Clock()
    a = admission(clock, max_pending=16, concurrency=16)
    for out in (1, 4, 1, 4):
        slots = [a.admit(None, max_tokens=11) for _ in range(out)]
        clock.now += 0.1
        for slot in slots:
            slot.first_token()
        clock.now += 10 * 0.05 * out
        for slot in slots:
            slot.release(finished=True, tokens=11)
    assert a.per_token.predict(1) == pytest.approx(0.05, rel=0.05)
    assert a.per_token.predict(8) == pytest.approx(0.40, rel=0.05)
    held = [a.admit(None) for _ in range(7)]
    assert a.finish_s(11) > 10 * 0.40  # the fit at 8 calls out, for 10 tokens after the first
    for slot in held:
        slot.release(finished=False)
    assert a.finish_s(11) < 10 * 0.1 + 0.5  # alone again: quick
