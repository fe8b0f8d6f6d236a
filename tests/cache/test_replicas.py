"""Replicas over a real nats-server: convergence, replay, and riding out a NATS outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from cache.core import SemanticCache
from cache.keys import Sampling, Scope
from services.cache.log import JetStreamLog
from services.common.natsd import NatsServer

MakeCache = Callable[..., SemanticCache]
ACME = Scope(tenant="acme", sampling=Sampling(temperature=0.0))
FRANCE = "What is the capital of France?"


@asynccontextmanager
async def replica(nats: NatsServer, make_cache: MakeCache) -> AsyncIterator[SemanticCache]:
    cache = make_cache()
    log = JetStreamLog(nats.url, cache.apply, retry_s=0.1, publish_timeout_s=0.5)
    cache.log = log
    async with log:
        yield cache


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_invalidation_reaches_second_replica(nats_server: NatsServer,
                                                   make_cache: MakeCache) -> None:
    async with replica(nats_server, make_cache) as one, replica(nats_server, make_cache) as two:
        entry = await one.store(ACME, FRANCE, "Paris")
        await eventually(lambda: two.stats().entries == 1)
        hit = await two.lookup(ACME, FRANCE)
        assert hit.hit and hit.entry is not None and hit.entry.id == entry.id
        assert await one.invalidate_entry("acme", entry.id) == 1
        await eventually(lambda: two.stats().entries == 0)
        assert not (await two.lookup(ACME, FRANCE)).hit


async def test_replica_started_later_hits_earlier_stores(nats_server: NatsServer,
                                                         make_cache: MakeCache) -> None:
    async with replica(nats_server, make_cache) as one:
        await one.store(ACME, FRANCE, "Paris")
        await one.store(ACME, "What is the capital of Spain?", "Madrid")
        gone = await one.store(ACME, "What is the capital of Italy?", "Rome")
        await one.invalidate_entry("acme", gone.id)
    async with replica(nats_server, make_cache) as late:
        assert late.stats().entries == 2  # replayed before the context opened
        assert (await late.lookup(ACME, FRANCE)).hit
        assert not (await late.lookup(ACME, "What is the capital of Italy?")).hit


async def test_nats_outage_keeps_serving_and_flushes(nats_server: NatsServer,
                                                     make_cache: MakeCache) -> None:
    async with replica(nats_server, make_cache) as one:
        log = one.log
        assert isinstance(log, JetStreamLog)
        await one.store(ACME, FRANCE, "Paris")
        await nats_server.stop()
        assert (await one.lookup(ACME, FRANCE)).hit
        await one.store(ACME, "What is the capital of Spain?", "Madrid")
        assert (await one.lookup(ACME, "What is the capital of Spain?")).hit
        assert log.degraded and log.pending >= 1
        await nats_server.start()
        await eventually(lambda: log.pending == 0 and not log.degraded, timeout=20)
        async with replica(nats_server, make_cache) as fresh:
            assert fresh.stats().entries == 2
            assert (await fresh.lookup(ACME, "What is the capital of Spain?")).hit
            await fresh.store(ACME, "What is the capital of Peru?", "Lima")
        await eventually(lambda: one.stats().entries == 3)  # following resumed too
