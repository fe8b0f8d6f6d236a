"""The cache audit, gateway side: a share of hits (and near-misses) re-asked to a judge.

Off the critical path: the answer has already gone out when a sampled hit is
judged. The judge (`TierJudge`: a tier named by setting, through the
broker's batch class when the tiers go through the broker) is asked whether
the cached prompt and the new one ask the same thing; its verdict goes back to
the cache (`Audit` RPC), which keeps the tenant's live wrong-hit estimate and
tightens the tenant's bound when that estimate passes δ (`cache.audit`).

At most `max_in_flight` audits run at once; a sampled hit beyond that is
skipped (counted), never queued behind the traffic it audits.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from typing import Protocol

from core.generation import GenerationRequest, Sampling
from services.gateway.domain import CacheLookup, TierCall, TierClient

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "Do these two requests ask for the same thing, so that one answer serves both? "
    "Any change of who does what to whom, of direction, amount, scope or place makes "
    "them different.\n\nRequest A: {a}\n\nRequest B: {b}\n\nAnswer with one word, yes or no.")
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class Judge(Protocol):
    async def same(self, tenant: str, cached: str, new: str) -> bool | None:
        """Whether `cached` and `new` ask the same thing; None when it cannot tell."""


class AuditSink(Protocol):
    """Where verdicts go (the cache service)."""

    async def audit(self, tenant: str, entry_id: str, hit: bool, same: bool,
                    timeout: float) -> None: ...


class TierJudge:
    """A tier answering yes or no at temperature 0 (the strongest tier, as an operator
    sets it up)."""

    def __init__(self, tier: TierClient, timeout_s: float = 60.0, batch: bool = True) -> None:
        self.tier, self.timeout_s, self.batch = tier, timeout_s, batch

    async def same(self, tenant: str, cached: str, new: str) -> bool | None:
        request = GenerationRequest(prompt=JUDGE_PROMPT.format(a=cached, b=new), chat=True,
                                    sampling=Sampling(temperature=0.0, max_tokens=4))
        call = TierCall(request, tenant=tenant, timeout_s=self.timeout_s, batch=self.batch)
        text = "".join([d.text async for d in self.tier.generate(call)])
        found = _VERDICT.search(text)
        return None if found is None else found.group(1).lower() == "yes"


class Auditor:
    """Samples hits and near-misses and has them judged in the background."""

    def __init__(self, judge: Judge, sink: AuditSink, hit_share: float,
                 near_miss_share: float = 0.0, max_in_flight: int = 4,
                 timeout_s: float = 5.0, draw: Callable[[], float] = random.random) -> None:
        self.judge, self.sink = judge, sink
        self.hit_share, self.near_miss_share = hit_share, near_miss_share
        self.max_in_flight, self.timeout_s = max_in_flight, timeout_s
        self._draw = draw
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = {"judged": 0, "skipped_busy": 0, "undecided": 0, "failed": 0}

    def consider(self, tenant: str, prompt: str, lookup: CacheLookup) -> None:
        """Maybe audit this lookup's hit or near-miss (returns at once)."""
        if not lookup.cached_prompt or not lookup.entry_id:
            return
        share = self.hit_share if lookup.hit else self.near_miss_share
        if share <= 0 or self._draw() >= share:
            return
        if len(self._tasks) >= self.max_in_flight:
            self.counts["skipped_busy"] += 1
            return
        task = asyncio.create_task(self._audit(tenant, prompt, lookup))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _audit(self, tenant: str, prompt: str, lookup: CacheLookup) -> None:
        try:
            verdict = await self.judge.same(tenant, lookup.cached_prompt, prompt)
            if verdict is None:
                self.counts["undecided"] += 1
                return
            await self.sink.audit(tenant, lookup.entry_id, lookup.hit, verdict,
                                  self.timeout_s)
            self.counts["judged"] += 1
        except Exception as exc:  # an audit never fails a request: counted and logged
            self.counts["failed"] += 1
            log.warning("cache audit of entry %s failed: %r", lookup.entry_id, exc)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Let running audits finish (bounded), then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()
