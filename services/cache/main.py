"""Cache service wiring: settings -> embedder, verifier, cache, event log -> gRPC server.

`CacheNode` is the whole service as one async context manager (tests run
several in one process, sharing one loaded embedder); `main()` runs one until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Self

from prometheus_client import CollectorRegistry

from cache.batcher import BatchedEmbedder
from cache.core import SemanticCache
from cache.embedder import Embedder
from cache.log import JetStreamLog
from cache.lookup import LookupWorker
from cache.verifier import FeatureVerifier
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from services.cache.servicer import CacheMetrics, CacheServicer
from services.cache.settings import CacheSettings
from services.common.server import GrpcService, wait_for_signal

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name


class CacheNode:
    """One cache replica: replays the log, serves gRPC, follows the log, sweeps TTLs."""

    def __init__(self, settings: CacheSettings, embedder: Embedder | None = None,
                 verifier: FeatureVerifier | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._verifier = verifier
        self._stack = AsyncExitStack()
        self.cache: SemanticCache | None = None
        self.log: JetStreamLog | None = None
        self.service: GrpcService | None = None

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        assert self.service is not None
        return self.service.port

    async def __aenter__(self) -> Self:
        s = self.settings
        try:
            embedder = self._embedder or await asyncio.to_thread(Embedder, s.model_path)
            verifier = self._verifier or FeatureVerifier.load(s.verifier_path,
                                                              s.calibration_path)
            registry = CollectorRegistry()
            metrics = CacheMetrics(registry)
            batched = await self._stack.enter_async_context(BatchedEmbedder(
                embedder, s.max_batch, s.max_wait_ms / 1000, on_batch=metrics.batch.observe))
            self.cache = SemanticCache(batched.encode_one, verifier, embedder.dim,
                                       s.cache_config())
            await self._stack.enter_async_context(LookupWorker(  # embed + verify lookups
                self.cache, lambda texts: embedder.encode(texts, batch_size=max(len(texts), 1)),
                s.max_batch, s.max_wait_ms / 1000, threads=s.lookup_threads,
                on_batch=metrics.batch.observe))
            if s.nats_url:
                self.log = JetStreamLog(
                    s.nats_url, self.cache.apply, stream=s.stream, subject=s.subject,
                    max_age_s=s.ttl_s, max_bytes=s.stream_max_bytes,
                    max_pending=s.max_pending_writes)
                await self._stack.enter_async_context(self.log)
                self.cache.log = self.log
            servicer = CacheServicer(self.cache, metrics, s.max_prompt_chars,
                                     s.max_answer_chars, self.log)
            self.service = GrpcService(
                "cache", s, register=lambda server: cache_pb2_grpc.add_CacheServicer_to_server(
                    servicer, server), service_names=[SERVICE_NAME], registry=registry)
            await self._stack.enter_async_context(self.service)
            await asyncio.to_thread(embedder.encode, ["warm-up"])
            sweeper = asyncio.create_task(self._sweep(), name="cache-ttl-sweep")
            self._stack.push_async_callback(_cancel, sweeper)
            await self.service.set_serving(True)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            await self.service.set_serving(False)
        await self._stack.aclose()

    async def _sweep(self) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            self.cache.expire()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(settings: CacheSettings) -> None:
    """Run one replica until SIGTERM or SIGINT, then drain."""
    async with CacheNode(settings) as node:
        logging.getLogger(__name__).info("cache serving on port %d", node.port)
        await wait_for_signal()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve cache` and `python -m services.cache`: flags or
    CMESH_CACHE_* variables."""
    logging.basicConfig(level=logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(CacheSettings(_cli_parse_args=args)))  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
