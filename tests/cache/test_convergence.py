"""Three replicas on one real nats-server converge to what the stream says, in its order.

Random concurrent stores, hits (which reorder each replica's LRU differently),
evictions and entry / namespace / tenant invalidations, issued from all three
replicas at once; after draining, every replica holds the same entry ids, and
they equal an independent model fed the stream in order.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from cache.core import SemanticCache
from cache.entries import Event
from cache.keys import Conversation, Sampling, Scope
from services.common.natsd import NatsServer
from tests.cache.support import (
    MakeCache,
    drain,
    last_seq,
    log_of,
    model,
    publish_raw,
    read_events,
    replica,
)

GREEDY = Sampling(temperature=0.0)
SCOPES = [Scope(tenant=t, conversation=Conversation(p), sampling=GREEDY)
          for t in ("acme", "globex") for p in ("", "Be brief.")]
PROMPTS = ["What is the capital of France?", "How do I reset my password?",
           "How many legs does a spider have?", "What is 2+2?", "Who wrote Hamlet?",
           "How far is the Moon?", "What does HTTP 404 mean?", "How do I boil an egg?",
           "What is the boiling point of water?", "Translate 'cat' into German.",
           "What is the speed of light?", "Name a prime number above 100."]
CAP = 3  # entries per namespace: small, so evictions happen often


async def _random_op(rng: random.Random, cache: SemanticCache, known: list[str]) -> None:
    roll = rng.random()
    scope = rng.choice(SCOPES)
    if roll < 0.5:
        entry = await cache.store(scope, rng.choice(PROMPTS), f"answer {rng.random():.6f}")
        known.append(entry.id)
    elif roll < 0.7:
        await cache.lookup(scope, rng.choice(PROMPTS))
    elif roll < 0.85 and known:
        await cache.invalidate_entry(rng.choice(["acme", "globex"]), rng.choice(known))
    elif roll < 0.95:
        await cache.invalidate_namespace(scope)
    else:
        await cache.invalidate_tenant(scope.tenant)


@pytest.mark.nats
@pytest.mark.parametrize("seed", range(1, 7))
async def test_three_replicas_converge_to_the_stream(seed: int, make_cache: MakeCache) -> None:
    rng = random.Random(seed)
    async with NatsServer() as nats_server, AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(replica(
            nats_server.url, make_cache, {"max_entries_per_namespace": CAP}))
            for _ in range(3)]
        known: list[str] = []
        for _ in range(12):  # rounds of concurrent operations from all replicas
            await asyncio.gather(*(_random_op(rng, rng.choice(replicas), known)
                                   for _ in range(6)))
        await drain(nats_server.url, replicas)
        held = [r.entry_ids() for r in replicas]
        events = await read_events(nats_server.url)
        assert held[0] == held[1] == held[2]
        assert held[0] == model(events)
        stats = [r.stats() for r in replicas]
        assert len({s.entries for s in stats}) == 1
        assert all(n <= CAP for n in replicas[0].namespace_sizes().values())
        ops = {ev.op for _, ev in events}
        assert {"store", "invalidate", "evict"} <= ops


@pytest.mark.nats
async def test_evictions_are_logged_once_and_applied_everywhere(make_cache: MakeCache) -> None:
    scope = SCOPES[0]
    async with NatsServer() as nats_server, AsyncExitStack() as stack:
        one, two = [await stack.enter_async_context(replica(
            nats_server.url, make_cache, {"max_entries_per_namespace": 2})) for _ in range(2)]
        first = await one.store(scope, PROMPTS[0], "Paris")
        second = await one.store(scope, PROMPTS[1], "Settings > Security")
        await drain(nats_server.url, [one, two])
        # A hit on `two` makes `first` its most recent entry; the store on `one` still
        # evicts `first` (one's LRU), and `two` follows the logged decision.
        assert (await two.lookup(scope, PROMPTS[0])).hit
        third = await one.store(scope, PROMPTS[2], "Eight")
        await drain(nats_server.url, [one, two])
        evictions = [ev for _, ev in await read_events(nats_server.url) if ev.op == "evict"]
        assert [ev.entry_id for ev in evictions] == [first.id]
        assert one.entry_ids() == two.entry_ids() == {second.id, third.id}
        assert one.stats().evictions == 1 and two.stats().evictions == 0


@pytest.mark.nats
async def test_other_tenant_cannot_invalidate(make_cache: MakeCache) -> None:
    acme, globex = SCOPES[0], SCOPES[2]
    async with NatsServer() as nats_server, AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(replica(nats_server.url, make_cache))
                    for _ in range(3)]
        entry = await replicas[0].store(acme, PROMPTS[0], "Paris")
        await drain(nats_server.url, replicas)
        before = await last_seq(nats_server.url)
        outcome = await replicas[1].invalidate_entry("globex", entry.id)
        assert outcome.removed == 0
        assert await last_seq(nats_server.url) == before, "a foreign id must not be published"
        assert (await replicas[2].invalidate_entry("acme", "no-such-id")).removed == 0
        assert await last_seq(nats_server.url) == before, "an absent id must not be published"
        # Events that name acme's entry or namespace on globex's behalf (a buggy or hostile
        # writer) reach the stream and are ignored by every replica on apply.
        log = log_of(replicas[1])
        planted = replace(entry, id="planted", tenant="globex", answer="globex's answer")
        for event in (Event("invalidate", "globex", entry_id=entry.id),
                      Event("invalidate", "globex", namespace=entry.namespace),
                      Event("evict", "globex", entry.namespace, entry.id),
                      Event("store", "globex", entry.namespace, planted.id, planted)):
            assert await log.append(event) is not None
        assert (await replicas[2].invalidate_tenant("globex")).removed == 0
        assert (await replicas[2].invalidate_namespace(globex)).removed == 0
        await drain(nats_server.url, replicas)
        assert all(r.entry_ids() == {entry.id} for r in replicas)
        assert (await replicas[1].invalidate_entry("acme", entry.id)).removed == 1
        await drain(nats_server.url, replicas)
        assert all(r.entry_ids() == set() for r in replicas)


@pytest.mark.nats
async def test_duplicate_events_apply_once(make_cache: MakeCache) -> None:
    scope = SCOPES[0]
    async with NatsServer() as nats_server, AsyncExitStack() as stack:
        one, two = [await stack.enter_async_context(replica(nats_server.url, make_cache))
                    for _ in range(2)]
        entry = await one.store(scope, PROMPTS[0], "Paris")
        await drain(nats_server.url, [one, two])
        store = next(ev for _, ev in await read_events(nats_server.url) if ev.op == "store")
        seq = await log_of(two).append(store)  # a retried publish: same Nats-Msg-Id
        assert seq == 1, "JetStream stores a retried event once"
        assert (await two.invalidate_entry("acme", entry.id)).removed == 1
        # The same event again under another message id (as if retried past the server's
        # window): the replicas remember the event id and do not resurrect the entry.
        await publish_raw(nats_server.url, store.to_json(), "retry-after-window")
        await drain(nats_server.url, [one, two])
        assert one.entry_ids() == two.entry_ids() == set()
