"""Hit decisions with the real embedder, FAISS and the shipped verifier."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cache.core import SemanticCache
from cache.keys import Conversation, Sampling, Scope, Turn, Uncacheable

MakeCache = Callable[..., SemanticCache]

GREEDY = Sampling(temperature=0.0)


def scope(tenant: str = "acme", **kw: object) -> Scope:
    return Scope(tenant=tenant, sampling=GREEDY, **kw)  # type: ignore[arg-type]


async def test_paraphrase_hits(make_cache: MakeCache) -> None:
    cache = make_cache()
    entry = await cache.store(scope(), "How do I reset my password?", "Settings > Security.")
    result = await cache.lookup(scope(), "How can I reset my password?")
    assert result.hit and result.entry is not None
    assert result.entry.id == entry.id
    assert result.probability >= cache.threshold


@pytest.mark.parametrize(("stored", "asked"), [
    ("turn off dark mode", "turn on dark mode"),
    ("what is 2+3", "what is 2+2"),
])
async def test_look_alikes_miss(make_cache: MakeCache, stored: str, asked: str) -> None:
    cache = make_cache()
    await cache.store(scope(), stored, "answer for " + stored)
    result = await cache.lookup(scope(), asked)
    assert result.candidate is not None, "the look-alike must reach the verifier"
    assert result.similarity > 0.8
    assert not result.hit
    assert cache.stats().guard_rejections == 1


async def test_identical_prompt_hits_even_at_strict_delta(make_cache: MakeCache) -> None:
    cache = make_cache(delta=0.02)
    await cache.store(scope(), "turn off dark mode", "Settings > Display > Dark mode: off")
    assert (await cache.lookup(scope(), "turn off dark mode")).hit


async def test_other_tenant_never_hits(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.store(scope("tenant-a"), "How do I reset my password?", "A's answer")
    result = await cache.lookup(scope("tenant-b"), "How do I reset my password?")
    assert not result.hit and result.candidate is None
    assert (await cache.lookup(scope("tenant-a"), "How do I reset my password?")).hit


async def test_follow_up_does_not_cross_conversations(make_cache: MakeCache) -> None:
    cache = make_cache()
    paris = scope(conversation=Conversation(turns=(Turn("user", "Tell me about Paris."),
                                                   Turn("assistant", "Paris is..."))))
    tokyo = scope(conversation=Conversation(turns=(Turn("user", "Tell me about Tokyo."),
                                                   Turn("assistant", "Tokyo is..."))))
    await cache.store(paris, "How many people live there?", "About 2.1 million.")
    assert not (await cache.lookup(tokyo, "How many people live there?")).hit
    assert (await cache.lookup(paris, "How many people live there?")).hit


async def test_system_prompt_and_sampling_split_namespaces(make_cache: MakeCache) -> None:
    cache = make_cache()
    french = scope(conversation=Conversation("Answer in French."))
    await cache.store(french, "What is a cat?", "Un chat...")
    assert not (await cache.lookup(scope(), "What is a cat?")).hit
    hot = Scope(tenant="acme", sampling=Sampling(temperature=0.8))
    with pytest.raises(Uncacheable):
        await cache.store(hot, "Write a poem", "...")
    assert make_cache(allow_sampling=True).namespace(hot).startswith("acme/")


async def test_unknown_namespace_is_a_miss(make_cache: MakeCache) -> None:
    result = await make_cache().lookup(scope("nobody"), "anything at all")
    assert not result.hit and result.entry is None


async def test_only_close_rivals_reach_the_verifier(make_cache: MakeCache) -> None:
    wide, narrow = make_cache(rival_window=2.0), make_cache(rival_window=0.1)
    for cache in (wide, narrow):
        for prompt in ("How do I reset my password?", "How do I change my password?",
                       "What is the capital of Peru?"):
            await cache.store(scope(), prompt, "answer")
    vector = await wide._embed("How can I reset my password?")
    ns = wide.namespace(scope())
    far = [sim for _, _, sim in wide.candidates(ns, vector.reshape(1, -1))]
    near = [sim for _, _, sim in narrow.candidates(narrow.namespace(scope()),
                                                   vector.reshape(1, -1))]
    assert len(near) < len(far) and min(near) >= max(far) - 0.1
    assert max(near) == max(far)  # the nearest is always judged


async def test_an_answer_in_flight_is_shared_by_the_same_test_as_a_hit(
        make_cache: MakeCache) -> None:
    """Prompts being answered now (not stored yet): a paraphrase may share one, a look-alike
    of one never does, and the pair that matches is the pair a stored entry would hit."""
    cache = make_cache()
    flying = ["turn off dark mode", "How do I reset my password?", "what is 2+3"]
    in_flight = [(p, (await cache.lookup_with_vector(scope(), p))[1]) for p in flying]
    asked = "How can I reset my password?"
    vector = (await cache.lookup_with_vector(scope(), asked))[1]

    match = await cache.match_in_flight(scope(), asked, vector, in_flight)
    assert match is not None and match.index == 1
    assert match.probability >= cache.threshold and match.similarity > 0.8
    for look_alike in ("turn on dark mode", "what is 2+2"):
        v = (await cache.lookup_with_vector(scope(), look_alike))[1]
        assert await cache.match_in_flight(scope(), look_alike, v, in_flight) is None
    await cache.store(scope(), flying[1], "Settings > Security.")
    stored = await cache.lookup(scope(), asked)
    assert stored.hit and abs(stored.probability - match.probability) < 1e-4
