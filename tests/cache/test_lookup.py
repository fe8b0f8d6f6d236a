"""The lookup worker: concurrent lookups micro-batched, same answers as one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cache.core import SemanticCache
from cache.keys import Sampling, Scope
from cache.lookup import LookupWorker
from core.embedder import Embedder

MakeCache = Callable[..., SemanticCache]
SCOPES = [Scope(tenant=t, sampling=Sampling(temperature=0.0)) for t in ("acme", "globex")]
STORED = ["How do I reset my password?", "What is the capital of France?",
          "How do I boil an egg?", "Convert 10 km to miles"]
ASKED = ["How can I reset my password?", "What's the capital city of France?",
         "How do I fry an egg?", "Convert 10 miles to km", "What is the capital of France?",
         "Who wrote Hamlet?"]


async def test_worker_batches_and_agrees_with_direct_path(make_cache: MakeCache,
                                                          embedder: Embedder) -> None:
    cache = make_cache()
    for scope in SCOPES:
        for prompt in STORED:
            await cache.store(scope, prompt, "answer: " + prompt)
    direct = {(s.tenant, q): await cache.lookup(s, q) for s in SCOPES for q in ASKED}
    sizes: list[int] = []
    async with LookupWorker(cache, embedder.encode_requests,
                            max_wait=0.02, on_batch=sizes.append):
        keys = [(s, q) for s in SCOPES for q in ASKED]
        results = await asyncio.gather(*(cache.lookup(s, q) for s, q in keys))
    assert max(sizes) > 1 and sum(sizes) == len(keys)
    for (scope, q), got in zip(keys, results, strict=True):
        want = direct[(scope.tenant, q)]
        # the verifier scores each lookup in its own ONNX call: batch mates change nothing
        assert abs(got.probability - want.probability) < 1e-3, q
        assert got.hit == want.hit, q
        assert got.namespace == want.namespace
        if got.hit:
            assert got.entry is not None and want.entry is not None
            assert got.entry.id == want.entry.id and got.entry.tenant == scope.tenant
    assert cache.lookups is None  # detached on exit


async def test_entry_removed_during_verification_never_hits(make_cache: MakeCache) -> None:
    cache = make_cache()
    entry = await cache.store(SCOPES[0], STORED[0], "a")
    ns = cache.namespace(SCOPES[0])
    vec = entry.vector.reshape(1, -1)
    rows = cache.candidates(ns, vec)
    probs = cache.verify([STORED[0]], vec, rows)
    await cache.invalidate_entry("acme", entry.id)
    assert not cache.decide(ns, 1, rows, probs)[0].hit
