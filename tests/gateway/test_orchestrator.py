"""The orchestrator's request flow over fakes of the cache, classifier and tiers."""

from __future__ import annotations

import asyncio

import pytest

from cache.keys import Sampling, Turn
from cascade.policy import Policy
from cascade.thresholds import Thresholds
from core.generation import Conversation
from services.gateway.domain import (
    DeadlineExceeded,
    FieldError,
    Metadata,
    Question,
    TextDelta,
    TierUnavailable,
)
from services.gateway.orchestrator import Orchestrator, OrchestratorConfig
from tests.gateway.fakes import FakeCache, FakeClassifier, FakeTier

THRESHOLDS = Thresholds(tiers=["small", "large"], thresholds={
    "route.large": 0.5, "cascade.small": 0.6, "hybrid.easy": 0.3, "hybrid.hard": 0.8})


def make(policy: str = "route", small_p: float = 0.9, **kw: object):
    cache, classifier = FakeCache(), FakeClassifier()
    tiers = {"small": FakeTier("small", small_p), "large": FakeTier("large", 0.95)}
    config = OrchestratorConfig(tier_prices={"small": 0.1, "large": 1.0},
                                **kw)  # type: ignore[arg-type]
    orch = Orchestrator(Policy(policy, THRESHOLDS), cache, classifier, tiers, config)
    return orch, cache, classifier, tiers


async def ask(orch: Orchestrator, q: Question, timeout: float | None = None
              ) -> tuple[str, Metadata, list[str]]:
    deltas: list[str] = []
    meta = None
    async for event in orch.ask(q, timeout):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            meta = event
    assert meta is not None
    return "".join(deltas), meta, deltas


def q(prompt: str, tenant: str = "acme", **kw: object) -> Question:
    return Question(tenant=tenant, prompt=prompt, **kw)  # type: ignore[arg-type]


async def test_miss_then_hit_then_other_tenant_misses() -> None:
    orch, cache, _, tiers = make()
    text, meta, _ = await ask(orch, q("capital of France?"))
    assert text.startswith("small:") and meta.cache_status == "miss"
    assert meta.tier == "small" and meta.tiers_tried == ["small"]
    await asyncio.sleep(0)  # the store runs in the flight after the answer
    assert cache.stores == 1
    again, meta2, _ = await ask(orch, q("capital of France?"))
    assert again == text and meta2.cache_status == "hit" and meta2.cost == 0
    assert meta2.saving > 0 and tiers["small"].calls == 1
    _, meta3, _ = await ask(orch, q("capital of France?", tenant="other"))
    assert meta3.cache_status == "miss" and tiers["small"].calls == 2


async def test_route_sends_hard_prompts_to_large_and_overrides_move_them() -> None:
    orch, _, classifier, _ = make()
    _, easy, _ = await ask(orch, q("easy one", skip_cache=True))
    _, hard, _ = await ask(orch, q("hard one", skip_cache=True))
    assert (easy.tier, hard.tier) == ("small", "large")
    assert easy.classifier_score == pytest.approx(0.1) and easy.classifier_status == "scored"
    _, moved, _ = await ask(orch, q("hard one", skip_cache=True,
                                    thresholds=(("route.large", 0.95),)))
    assert moved.tier == "small"
    calls = classifier.calls
    _, forced, _ = await ask(orch, q("easy one", skip_cache=True, force_tier="large"))
    assert forced.tier == "large" and classifier.calls == calls  # no score needed


async def test_the_cache_vector_is_scored_unless_earlier_turns_change_the_text() -> None:
    orch, _, classifier, _ = make()
    await ask(orch, q("easy one"))
    assert classifier.calls == classifier.given_vectors == 1
    earlier = Conversation(turns=(Turn("user", "before"), Turn("assistant", "ok")))
    await ask(orch, q("easy one", conversation=earlier))
    assert classifier.calls == 2 and classifier.given_vectors == 1
    await ask(orch, q("easy two", skip_cache=True))
    assert classifier.calls == 3 and classifier.given_vectors == 1


async def test_cascade_escalates_on_low_confidence_and_streams_only_the_kept_answer() -> None:
    orch, _, classifier, _ = make(policy="cascade", small_p=0.3)
    text, meta, deltas = await ask(orch, q("anything"))
    assert meta.tiers_tried == ["small", "large"] and meta.tier == "large"
    assert text.startswith("large:") and "small" not in text
    assert meta.classifier_status == "skipped" and classifier.calls == 0
    small_cost = (10 + 2) / 1000 * 0.1
    large_cost = (10 + 2) / 1000 * 1.0
    assert meta.cost == pytest.approx(small_cost + large_cost)
    assert meta.saving == pytest.approx(-small_cost)
    assert meta.prompt_tokens == 20 and meta.confidence == pytest.approx(0.95)
    # The large tier cannot escalate, so it streams token by token.
    assert len(deltas) == 2


async def test_confident_small_answer_is_kept_in_one_delta() -> None:
    orch, *_ = make(policy="cascade", small_p=0.9)
    _, meta, deltas = await ask(orch, q("anything goes"))
    assert meta.tiers_tried == ["small"] and len(deltas) == 1
    assert meta.saving == pytest.approx((10 + 3) / 1000 * (1.0 - 0.1))


async def test_broken_cache_and_classifier_are_misses_not_failures() -> None:
    orch, cache, classifier, _ = make()
    cache.broken = classifier.broken = True
    text, meta, _ = await ask(orch, q("hard question"))
    assert text and meta.cache_status == "unavailable"
    assert meta.classifier_status == "unavailable" and meta.classifier_score is None
    # Without a score the route policy falls back to the cascade from the cheapest tier.
    assert meta.tiers_tried[0] == "small" and meta.policy == "cascade"


async def test_slow_cache_times_out_as_a_miss() -> None:
    orch, cache, _, _ = make(cache_timeout_s=0.05)
    cache.delay = 1.0
    _, meta, _ = await ask(orch, q("easy"))
    assert meta.cache_status == "unavailable" and meta.latency_ms["cache_ms"] < 500


async def test_identical_concurrent_misses_run_one_generation() -> None:
    orch, _, _, tiers = make()
    tiers["small"].delay = 0.01
    results = await asyncio.gather(*(ask(orch, q("same question")) for _ in range(8)))
    assert tiers["small"].calls == 1
    assert len({text for text, _, _ in results}) == 1
    assert sum(meta.coalesced for _, meta, _ in results) == 7
    assert len({meta.request_id for _, meta, _ in results}) == 8
    _, other, _ = await ask(orch, q("same question", tenant="globex"))
    assert other.cache_status == "miss" and tiers["small"].calls == 2


async def test_a_repeat_during_the_store_waits_for_it_and_hits() -> None:
    orch, cache, _, tiers = make()
    cache.store_delay = 0.1
    _, first, _ = await ask(orch, q("stored slowly"))
    _, again, _ = await ask(orch, q("stored slowly"))  # the first flight is still storing
    assert first.cache_status == "miss" and again.cache_status == "hit"
    assert not again.coalesced and tiers["small"].calls == 1


async def test_the_metadata_says_whether_the_answer_was_stored_and_why_not() -> None:
    orch, cache, _, tiers = make()
    _, stored, _ = await ask(orch, q("stored"))
    assert (stored.cache_stored, stored.cache_store_reason) == (True, "")
    assert cache.stores == 1 and stored.latency_ms["store_ms"] >= 0  # stored before the reply
    _, hit, _ = await ask(orch, q("stored"))
    assert (hit.cache_stored, hit.cache_store_reason) == (False, "served from the cache")
    _, asked_not, _ = await ask(orch, q("keep out", no_store=True))
    assert (asked_not.cache_stored, asked_not.cache_store_reason) == (False, "no_store")
    tiers["small"].finish = "length"  # the same limit would cut it at the same token
    _, cut, _ = await ask(orch, q("cut short"))
    assert (cut.cache_stored, cut.cache_store_reason) == (True, "")
    _, cut_hit, _ = await ask(orch, q("cut short"))  # served cut, and says so
    assert (cut_hit.cache_status, cut_hit.finish_reason) == ("hit", "stop")  # 7 < 256
    limited = q("cut at seven", sampling=Sampling(temperature=0.0, max_tokens=7))
    await ask(orch, limited)
    _, seven, _ = await ask(orch, limited)  # the fake cache's answers have 7 tokens
    assert (seven.cache_status, seven.finish_reason) == ("hit", "length")
    tiers["small"].finish = "abort"
    _, aborted, _ = await ask(orch, q("cut off"))
    assert (aborted.cache_stored, aborted.cache_store_reason) == (False, "finished by abort")
    tiers["small"].finish = "stop"
    cache.broken = True
    _, down, _ = await ask(orch, q("cache down"))
    assert (down.cache_stored, down.cache_store_reason) == (False, "cache unavailable")
    assert cache.stores == 3


async def test_without_a_cache_the_reason_is_that_there_is_none() -> None:
    tiers = {"small": FakeTier("small"), "large": FakeTier("large")}
    orch = Orchestrator(Policy("route", THRESHOLDS), None, FakeClassifier(), tiers,
                        OrchestratorConfig(tier_prices={"small": 0.1, "large": 1.0}))
    _, meta, _ = await ask(orch, q("anything"))
    assert (meta.cache_stored, meta.cache_store_reason) == (False, "no cache configured")


async def test_conversations_are_separate_namespaces() -> None:
    orch, _, _, tiers = make()
    one = Conversation(turns=(Turn("user", "Tell me about Paris"),
                              Turn("assistant", "Paris is in France.")))
    two = Conversation(turns=(Turn("user", "Tell me about Rome"),
                              Turn("assistant", "Rome is in Italy.")))
    await ask(orch, q("How many people live there?", conversation=one))
    await asyncio.sleep(0)
    _, meta, _ = await ask(orch, q("How many people live there?", conversation=two))
    assert meta.cache_status == "miss" and tiers["small"].calls == 2


async def test_dead_tier_is_unavailable_naming_it() -> None:
    orch, _, _, tiers = make()
    tiers["large"].down = True
    with pytest.raises(TierUnavailable, match="large"):
        await ask(orch, q("hard question"))


async def test_deadline_shorter_than_generation_cancels_the_tier() -> None:
    orch, _, _, tiers = make()
    tiers["small"].delay = 0.2
    with pytest.raises(DeadlineExceeded):
        await ask(orch, q("a slow easy answer"), timeout=0.3)
    assert tiers["small"].cancelled == 1
    assert tiers["small"].sent[0].timeout_s <= 0.3


async def test_a_joiner_keeps_its_own_deadline_when_the_leader_runs_out() -> None:
    orch, _, _, tiers = make()
    tiers["small"].delay = 0.1
    prompt = "one two three four five six seven eight nine ten"
    leader = asyncio.create_task(ask(orch, q(prompt), timeout=0.35))
    await asyncio.sleep(0.05)
    text, meta, _ = await ask(orch, q(prompt), timeout=10)
    with pytest.raises(DeadlineExceeded):
        await leader
    assert meta.coalesced
    assert text.split() == f"small: {prompt}".split()  # continued: nothing repeated or lost
    assert tiers["small"].calls == 2 and tiers["small"].sent[1].request.continue_token_ids


@pytest.mark.parametrize(("question", "field"), [
    (q(""), "prompt"),
    (q("x" * 9000), "prompt"),
    (q("a", force_tier="medium"), "policy.force_tier"),
    (q("a", policy="random"), "policy.policy"),
    (q("a", thresholds=(("route.large", 1.5),)), "policy.thresholds.route.large"),
    (q("a", thresholds=(("route.huge", 0.5),)), "policy.thresholds.route.huge"),
    (q("a", sampling=Sampling(temperature=-1)), "sampling.temperature"),
    (q("a", sampling=Sampling(top_p=0)), "sampling.top_p"),
    (q("a", sampling=Sampling(max_tokens=100_000)), "sampling.max_tokens"),
    (q("a", sampling=Sampling(top_k=-5)), "sampling.top_k"),
    (q("a", sampling=Sampling(temperature=5)), "sampling.temperature"),
    (q("a", sampling=Sampling(temperature=float("nan"))), "sampling.temperature"),
    (q("a", sampling=Sampling(stop=("",))), "sampling.stop"),
    (q("a", thresholds=(("route.large", float("nan")),)), "policy.thresholds.route.large"),
])
async def test_bad_input_names_the_field(question: Question, field: str) -> None:
    orch, *_ = make()
    with pytest.raises(FieldError) as err:
        await ask(orch, question)
    assert err.value.field == field


async def test_defaults_make_sampling_explicit() -> None:
    orch, _, _, tiers = make(default_max_tokens=64)
    await ask(orch, q("easy"))
    sampling = tiers["small"].sent[0].request.sampling
    assert sampling.temperature == 0.0 and sampling.max_tokens == 64


async def test_a_paraphrase_follows_an_answer_in_flight_but_never_a_no_store_one() -> None:
    orch, cache, _, tiers = make()
    cache.same_prefix, tiers["small"].delay = "Please, ", 0.05

    async def asked_while(first: Question, then: Question) -> tuple[str, str, Metadata]:
        flight = orch.ask(first)
        head = await anext(flight)
        assert isinstance(head, TextDelta)
        later = asyncio.create_task(ask(orch, then))
        rest = [e.text async for e in flight if isinstance(e, TextDelta)]
        text, meta, _ = await later
        return head.text + "".join(rest), text, meta

    first, shared, meta = await asked_while(q("capital of France?"),
                                            q("Please, capital of France?"))
    assert shared == first and meta.cache_status == "hit" and meta.cost == 0
    assert "in flight" in meta.cache_store_reason and tiers["small"].calls == 1
    assert cache.offered[-1] == ["capital of France?"]

    first, own, meta = await asked_while(q("capital of Spain?", no_store=True),
                                         q("Please, capital of Spain?"))
    assert own != first and own.startswith("small: Please,") and meta.cache_status == "miss"
    assert cache.offered[-1] == [] and tiers["small"].calls == 3


async def test_with_in_flight_joins_off_no_prompt_is_offered() -> None:
    orch, cache, _, _ = make(join_in_flight=False)
    cache.same_prefix = "Please, "
    await asyncio.gather(ask(orch, q("capital of France?")),
                         ask(orch, q("Please, capital of France?")))
    assert cache.offered == [[], []]


async def test_a_flight_that_ended_before_it_was_followed_is_answered_afresh() -> None:
    """The matched flight finished during the slow lookup: the request generates its own
    answer, with the score that ran beside the lookup (not cancelled for a hit that did
    not happen)."""
    orch, cache, classifier, tiers = make(embed_once=False)
    cache.same_prefix, tiers["small"].delay = "Please, ", 0.02
    first = orch.ask(q("capital of France?"))
    assert isinstance(await anext(first), TextDelta)
    cache.delay = 0.3  # the next lookup outlasts the first answer (its timeout: 0.5 s)
    classifier.delay = 0.4  # and the score is still on its way when the lookup returns
    later = asyncio.create_task(ask(orch, q("Please, capital of France?")))
    async for _ in first:
        pass
    text, meta, _ = await later
    assert cache.offered[-1] == ["capital of France?"]  # it was in flight at the lookup
    assert text.startswith("small: Please,") and meta.cache_status == "miss"
    assert meta.classifier_status == "scored" and classifier.calls == 2
    assert tiers["small"].calls == 2
