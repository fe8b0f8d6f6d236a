"""Speculation: under the route policy the first tier starts while the classifier scores
(the orchestrator over fakes of the cache, classifier and tiers)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from cache.keys import Scope
from cascade.policy import Policy
from services.gateway.domain import TextDelta
from services.gateway.orchestrator import Orchestrator, OrchestratorConfig
from tests.gateway.fakes import FakeClassifier, FakeTier
from tests.gateway.test_orchestrator import THRESHOLDS, ask, q

SCORE_S = 0.3  # the classifier's time to a score
WORD_S = 0.05  # each tier's time per word


@dataclass
class SlowClassifier(FakeClassifier):
    async def score(self, scope: Scope, prompt: str, timeout: float,
                    vector: tuple[float, ...] = ()) -> float:
        await asyncio.sleep(SCORE_S)
        return await super().score(scope, prompt, timeout, vector)


def make(speculate: bool = True, policy: str = "route", broken: bool = False,
         word_s: float = WORD_S):
    tiers = {"small": FakeTier("small", delay=word_s), "large": FakeTier("large", delay=word_s)}
    classifier = SlowClassifier(broken=broken)
    config = OrchestratorConfig(tier_prices={"small": 0.1, "large": 1.0}, speculate=speculate)
    return Orchestrator(Policy(policy, THRESHOLDS), None, classifier, tiers, config), tiers


async def first_text_after(orch: Orchestrator, prompt: str) -> float:
    start = time.perf_counter()
    async for event in orch.ask(q(prompt)):
        if isinstance(event, TextDelta):
            return time.perf_counter() - start
    raise AssertionError("no text")


async def test_a_prompt_routed_to_the_first_tier_has_its_tokens_started_while_scoring() -> None:
    orch, tiers = make()
    text, meta, deltas = await ask(orch, q("easy one"))
    assert text == "small: easy one " and meta.tier == "small" and len(deltas) > 1  # streamed
    assert tiers["small"].calls == 1 and tiers["large"].calls == 0
    assert meta.latency_ms["first_token_ms"] >= SCORE_S * 1000  # sent once routed, not before
    fast = await first_text_after(make()[0], "easy one")
    slow = await first_text_after(make(speculate=False)[0], "easy one")
    # its first words were made while scoring: the wait is the score, not score + a word
    assert fast < SCORE_S + WORD_S / 2 <= slow


class Counted:
    def __init__(self) -> None:
        self.outcomes: list[bool] = []

    def side_call_failed(self, service: str, call: str) -> None:
        pass

    def generation(self, tier: str) -> None:
        pass

    def speculated(self, taken: bool) -> None:
        self.outcomes.append(taken)

    def answered(self, meta: object) -> None:
        pass


async def test_each_speculation_is_counted_taken_or_dropped() -> None:
    orch, _ = make()
    orch.observer = counted = Counted()
    await ask(orch, q("easy one"))
    await ask(orch, q("hard one"))
    assert counted.outcomes == [True, False]


async def test_a_prompt_routed_elsewhere_cancels_the_first_tier_before_a_word_is_sent() -> None:
    orch, tiers = make(word_s=0.2)  # small still busy when the score comes
    text, meta, _ = await ask(orch, q("hard one"))
    assert text == "large: hard one " and meta.tiers_tried == ["large"]
    assert tiers["small"].calls == 1 and tiers["small"].cancelled == 1  # started, then dropped
    assert meta.completion_tokens == 3  # large's only: the dropped call is not billed
    assert meta.cost == pytest.approx((10 + 3) / 1000 * 1.0)


async def test_no_score_means_the_cascade_which_does_not_reuse_a_streamed_call() -> None:
    """Classifier down: the cascade starts at small with its answer held back until its
    confidence is known, so the speculative (streaming) call is not the one used."""
    orch, tiers = make(broken=True, word_s=0.2)
    text, meta, _ = await ask(orch, q("easy one"))
    assert meta.classifier_status == "unavailable" and meta.tier == "small"
    assert text == "small: easy one "
    assert tiers["small"].calls == 2 and tiers["small"].cancelled == 1


async def test_other_policies_and_batch_lines_do_not_speculate() -> None:
    orch, tiers = make(policy="hybrid")
    await ask(orch, q("easy one"))
    assert tiers["small"].cancelled == 0 and tiers["small"].calls == 1
    orch, tiers = make()
    await ask(orch, q("hard one", batch=True))
    assert tiers["small"].calls == 0


async def test_a_client_leaving_while_scoring_cancels_the_speculative_call() -> None:
    orch, tiers = make(word_s=0.2)
    stream = orch.ask(q("easy one"))
    reader = asyncio.create_task(anext(stream))  # waits for the first word
    await asyncio.sleep(SCORE_S / 2)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert tiers["small"].calls == 1 and tiers["small"].cancelled == 1
