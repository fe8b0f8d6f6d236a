"""The gateway's Auditor and TierJudge, one class at a time (the whole path:
test_cache_audit_e2e.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from core.generation import Delta
from services.gateway.audit import Auditor, TierJudge
from services.gateway.domain import CacheLookup, TierCall


@dataclass
class Sink:
    verdicts: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    fail: bool = False

    async def audit(self, tenant: str, entry_id: str, hit: bool, same: bool,
                    timeout: float) -> None:
        if self.fail:
            raise ConnectionError("cache down")
        self.verdicts.append((tenant, entry_id, hit, same))


@dataclass
class Judge:
    verdict: bool | None = True
    gate: asyncio.Event | None = None

    async def same(self, tenant: str, cached: str, new: str) -> bool | None:
        if self.gate is not None:
            await self.gate.wait()
        return self.verdict


def hit(entry_id: str = "e1") -> CacheLookup:
    return CacheLookup(hit=True, answer="Paris", entry_id=entry_id,
                       cached_prompt="What is the capital of France?")


def near_miss() -> CacheLookup:
    return CacheLookup(hit=False, entry_id="e2", cached_prompt="capital of Spain?")


async def settle(auditor: Auditor) -> None:
    await auditor.drain(timeout_s=2)


async def test_the_shares_pick_which_hits_and_near_misses_are_judged() -> None:
    sink = Sink()
    draws = iter([0.05, 0.5, 0.05, 0.5])  # under the share: audited
    auditor = Auditor(Judge(False), sink, hit_share=0.1, near_miss_share=0.1,
                      draw=lambda: next(draws))
    for lookup in (hit("a"), hit("b"), near_miss(), near_miss()):
        auditor.consider("acme", "capital of France?", lookup)
    await settle(auditor)
    assert sink.verdicts == [("acme", "a", True, False), ("acme", "e2", False, False)]
    assert auditor.counts["judged"] == 2


async def test_a_plain_miss_or_a_zero_share_is_never_judged() -> None:
    sink = Sink()
    auditor = Auditor(Judge(), sink, hit_share=1.0, near_miss_share=0.0)
    auditor.consider("acme", "x", CacheLookup(hit=False))  # nothing to compare with
    auditor.consider("acme", "x", near_miss())
    await settle(auditor)
    assert sink.verdicts == []


async def test_audits_past_max_in_flight_are_skipped_not_queued() -> None:
    gate = asyncio.Event()
    sink = Sink()
    auditor = Auditor(Judge(True, gate), sink, hit_share=1.0, max_in_flight=2)
    for i in range(5):
        auditor.consider("acme", "x", hit(f"e{i}"))
    assert auditor.counts["skipped_busy"] == 3
    gate.set()
    await settle(auditor)
    assert [v[1] for v in sink.verdicts] == ["e0", "e1"]


async def test_undecided_and_failed_audits_are_counted_and_never_raise() -> None:
    undecided = Auditor(Judge(None), Sink(), hit_share=1.0)
    undecided.consider("acme", "x", hit())
    await settle(undecided)
    failing = Auditor(Judge(True), Sink(fail=True), hit_share=1.0)
    failing.consider("acme", "x", hit())
    await settle(failing)
    assert undecided.counts["undecided"] == 1 and failing.counts["failed"] == 1


@dataclass
class Tier:
    says: str
    calls: list[TierCall] = field(default_factory=list)

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        self.calls.append(call)
        yield Delta(self.says)
        yield Delta(finish_reason="stop")


@pytest.mark.parametrize(("says", "verdict"), [
    ("Yes.", True), (" no", False), ("NO, they differ", False), ("maybe", None)])
async def test_the_tier_judge_reads_one_word_at_temperature_zero(
        says: str, verdict: bool | None) -> None:
    tier = Tier(says)
    assert await TierJudge(tier).same("acme", "cached?", "new?") is verdict
    call = tier.calls[0]
    assert call.batch and call.tenant == "acme"
    assert call.request.sampling.temperature == 0.0
    assert "Request A: cached?" in call.request.prompt
    assert "Request B: new?" in call.request.prompt
