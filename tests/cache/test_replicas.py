"""Replicas over a real nats-server: invalidation reaches others, replay, riding out an outage.

Every wait is on a condition (the stream's last sequence applied, the write
buffer acknowledged), never a sleep, so the tests hold on a loaded machine.
"""

from __future__ import annotations

from cache.keys import Sampling, Scope
from services.common.natsd import NatsServer
from tests.cache.support import MakeCache, drain, log_of, replica

ACME = Scope(tenant="acme", sampling=Sampling(temperature=0.0))
FRANCE = "What is the capital of France?"


async def test_invalidation_reaches_second_replica(nats_server: NatsServer,
                                                   make_cache: MakeCache) -> None:
    url = nats_server.url
    async with replica(url, make_cache) as one, replica(url, make_cache) as two:
        entry = await one.store(ACME, FRANCE, "Paris")
        await drain(url, [one, two])
        assert two.stats().entries == 1
        hit = await two.lookup(ACME, FRANCE)
        assert hit.hit and hit.entry is not None and hit.entry.id == entry.id
        assert (await one.invalidate_entry("acme", entry.id)).removed == 1
        await drain(url, [one, two])
        assert two.stats().entries == 0
        assert not (await two.lookup(ACME, FRANCE)).hit


async def test_replica_started_later_hits_earlier_stores(nats_server: NatsServer,
                                                         make_cache: MakeCache) -> None:
    async with replica(nats_server.url, make_cache) as one:
        await one.store(ACME, FRANCE, "Paris")
        await one.store(ACME, "What is the capital of Spain?", "Madrid")
        gone = await one.store(ACME, "What is the capital of Italy?", "Rome")
        await one.invalidate_entry("acme", gone.id)
    async with replica(nats_server.url, make_cache) as late:
        assert late.stats().entries == 2  # replayed before the context opened
        assert (await late.lookup(ACME, FRANCE)).hit
        assert not (await late.lookup(ACME, "What is the capital of Italy?")).hit


async def test_nats_outage_keeps_serving_and_flushes(nats_server: NatsServer,
                                                     make_cache: MakeCache) -> None:
    url = nats_server.url
    async with replica(url, make_cache) as one:
        log = log_of(one)
        await one.store(ACME, FRANCE, "Paris")
        await nats_server.stop()
        assert (await one.lookup(ACME, FRANCE)).hit
        spain = await one.store_with_receipt(ACME, "What is the capital of Spain?", "Madrid")
        assert not spain.durable
        assert (await one.lookup(ACME, "What is the capital of Spain?")).hit  # tentative
        assert log.degraded and log.pending == 1
        await nats_server.start()
        await drain(url, [one])
        assert not log.degraded
        async with replica(url, make_cache) as fresh:
            assert fresh.stats().entries == 2
            assert (await fresh.lookup(ACME, "What is the capital of Spain?")).hit
            await fresh.store(ACME, "What is the capital of Peru?", "Lima")
            await drain(url, [one, fresh])
        assert one.stats().entries == 3  # following resumed too
