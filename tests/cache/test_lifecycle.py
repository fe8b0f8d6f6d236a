"""TTL expiry, LRU eviction, invalidation and the index's exact-to-HNSW switch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cache.core import SemanticCache
from cache.index import VectorIndex
from cache.keys import Conversation, Sampling, Scope

MakeCache = Callable[..., SemanticCache]
ACME = Scope(tenant="acme", sampling=Sampling(temperature=0.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_expiry(make_cache: MakeCache) -> None:
    clock = Clock()
    cache = make_cache(clock=clock, ttl_s=60.0)
    await cache.store(ACME, "What is the capital of France?", "Paris")
    clock.now += 59
    assert (await cache.lookup(ACME, "What is the capital of France?")).hit
    clock.now += 2
    assert not (await cache.lookup(ACME, "What is the capital of France?")).hit
    assert cache.stats().expirations == 1
    assert cache.stats().entries == 0


async def test_sweep_drops_expired(make_cache: MakeCache) -> None:
    clock = Clock()
    cache = make_cache(clock=clock, ttl_s=10.0)
    await cache.store(ACME, "What is the capital of Spain?", "Madrid")
    clock.now += 11
    assert cache.expire() == 1
    assert cache.stats().entries == 0


async def test_lru_eviction(make_cache: MakeCache) -> None:
    cache = make_cache(max_entries_per_namespace=2)
    await cache.store(ACME, "What is the capital of France?", "Paris")
    await cache.store(ACME, "What is the capital of Spain?", "Madrid")
    assert (await cache.lookup(ACME, "What is the capital of France?")).hit  # France is recent
    await cache.store(ACME, "What is the capital of Italy?", "Rome")
    assert cache.stats().evictions == 1
    assert not (await cache.lookup(ACME, "What is the capital of Spain?")).hit
    assert (await cache.lookup(ACME, "What is the capital of France?")).hit
    assert (await cache.lookup(ACME, "What is the capital of Italy?")).hit


async def test_invalidate_entry_namespace_tenant(make_cache: MakeCache) -> None:
    cache = make_cache()
    other_ns = Scope(tenant="acme", conversation=Conversation("Be brief."), sampling=ACME.sampling)
    other_tenant = Scope(tenant="globex", sampling=ACME.sampling)
    first = await cache.store(ACME, "What is the capital of France?", "Paris")
    await cache.store(ACME, "What is the capital of Spain?", "Madrid")
    await cache.store(other_ns, "What is the capital of Italy?", "Rome")
    await cache.store(other_tenant, "What is the capital of Peru?", "Lima")
    assert (await cache.invalidate_entry("globex", first.id)).removed == 0, "another tenant's id"
    assert (await cache.invalidate_entry("acme", first.id)).removed == 1
    assert not (await cache.lookup(ACME, "What is the capital of France?")).hit
    assert (await cache.invalidate_namespace(ACME)).removed == 1
    assert (await cache.lookup(other_ns, "What is the capital of Italy?")).hit
    assert (await cache.invalidate_tenant("acme")).removed == 1
    assert cache.stats("acme").entries == 0
    assert cache.stats("globex").entries == 1


def test_index_switches_to_hnsw_and_forgets() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(32, hnsw_from=200, use_gpu=False)
    index.add(np.arange(150), vecs[:150])
    assert index.kind == "flat"
    index.add(np.arange(150, 300), vecs[150:])
    assert index.kind == "hnsw"
    assert index.search(vecs[7], 1)[0][0] == 7
    index.remove([7])
    assert all(i != 7 for i, _ in index.search(vecs[7], 5))
    assert len(index) == 299
    index.remove(list(range(100)))  # past a quarter dead: rebuilt without tombstones
    assert index.search(vecs[150], 1)[0][0] == 150
