"""Cache service: settings -> embedder, verifier, cache, event log -> gRPC server.

`CacheNode` is the whole service as one async context manager (tests run
several in one process, sharing one loaded embedder); `main()` runs one until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cache.core import CacheParts, SemanticCache
from cache.keys import Sampling, Scope
from cache.lookup import LookupWorker
from cache.verifier import FeatureVerifier
from core.batcher import BatchedEmbedder
from core.embedder import Embedder, limit_threads
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from services.cache.log import JetStreamLog, open_log
from services.cache.servicer import CacheMetrics, CacheServicer
from services.cache.settings import CacheSettings
from services.common.node import (
    Registration,
    ServiceNode,
    cancel_task,
    full_name,
    run_service,
)

SERVICE_NAME = full_name(cache_pb2, "Cache")


class CacheNode(ServiceNode[CacheSettings]):
    """One cache replica: replays the log, serves gRPC, follows the log, sweeps TTLs."""

    name = "cache"
    cache: SemanticCache | None = None
    log: JetStreamLog | None = None

    def __init__(self, settings: CacheSettings, embedder: Embedder | None = None,
                 verifier: FeatureVerifier | None = None, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._embedder, self._verifier = embedder, verifier

    async def build(self) -> list[Registration]:
        s = self.settings
        embedder = self._embedder
        if embedder is None:
            embedder = await asyncio.to_thread(Embedder, s.model_path)
        self._embedder = embedder
        verifier = self._verifier or FeatureVerifier.load(s.verifier_path, s.calibration_path)
        metrics = CacheMetrics(self.registry)
        batched = await self.stack.enter_async_context(BatchedEmbedder(
            embedder, s.max_batch, s.max_wait_ms / 1000, on_batch=metrics.batch.observe,
            threads=s.lookup_threads))
        self._encode_one = batched.encode_one
        parts = CacheParts.build(verifier, embedder.dim, s.cache_config())
        if s.nats_url:
            self.log = open_log(s.log_config(s.nats_url), parts.replica)
        self.cache = SemanticCache(batched.encode_one, parts, self.log)
        await self.stack.enter_async_context(LookupWorker(  # embed + verify lookups
            self.cache, embedder.encode_requests,
            s.max_batch, s.max_wait_ms / 1000, threads=s.lookup_threads,
            on_batch=metrics.batch.observe))
        if self.log is not None:
            await self.stack.enter_async_context(self.log)
            metrics.follow(self.log)
        servicer = CacheServicer(self.cache, metrics, s.max_prompt_chars,
                                 s.max_answer_chars, self.log)
        return [Registration(servicer, cache_pb2_grpc.add_CacheServicer_to_server, SERVICE_NAME)]

    async def warm_up(self) -> None:
        assert self._embedder is not None
        await asyncio.to_thread(self._warm_embedder, self._embedder)
        await self._warm_hit_path()
        sweeper = asyncio.create_task(self._sweep(), name="cache-ttl-sweep")
        self.stack.push_async_callback(cancel_task, sweeper)

    async def _warm_hit_path(self) -> None:
        """Run every part of a hit once before SERVING, so the first lookup is not the slow
        one: a store and a paraphrase lookup in a throwaway cache (same encoder and
        verifier, no log: FAISS, the rules and the cross-encoder), then one lookup of an
        empty namespace through the real lookup worker (its thread's first encode). The
        throwaway keeps the warm-up out of every tenant's entries and the event log; the
        real cache's counters are put back as they were."""
        assert self.cache is not None
        cache = self.cache
        scope = Scope(tenant="cache-warm-up", sampling=Sampling(temperature=0.0))
        spare = SemanticCache.build(self._encode_one, cache.verifier, cache.dim, cache.config)
        await spare.store(scope, "What is the capital of France?", "Paris.")
        await spare.lookup(scope, "Which city is the capital of France?")
        counters = replace(cache.counters)
        await cache.lookup_with_vector(scope, "What is the capital of France?")
        cache.counters.restore(counters)

    def _warm_embedder(self, embedder: Embedder) -> None:
        limit_threads(self.settings.lookup_threads)  # warm what serving will run
        embedder.warm_up()

    async def _sweep(self) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            self.cache.expire()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve cache` and `python -m services.cache`: flags or
    CMESH_CACHE_* variables."""
    run_service(CacheNode, CacheSettings, argv)


if __name__ == "__main__":
    main()
