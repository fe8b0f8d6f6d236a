"""The hit path: concurrent lookups coalesced into micro-batches, served by one worker.

A lookup costs one MiniLM encode and a cross-encoder pass over its few
candidates; done one at a time on the event loop, the transformer work would
stall every other request and leave batching gains unused. The worker
collects up to `max_batch` lookups (waiting at most `max_wait` seconds),
embeds them in one call, searches FAISS on the event loop (a millisecond,
and the index is only ever touched from the loop, so stores need no lock),
then verifies every candidate of the batch in one cross-encoder call. The
embed and verify calls run on one dedicated thread that owns the machine's
math threads: BLAS/OpenMP pools are capped with threadpoolctl and torch's
pool with `set_num_threads`, so the model work never oversubscribes the
cores the event loop and gRPC need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cache.core import LookupResult, SemanticCache
from core.embedder import limit_threads

EncodeMany = Callable[[list[str]], np.ndarray]


def _limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    limit_threads(threads)


class LookupWorker:
    """Serve `cache.lookup` through micro-batches; use as an async context manager."""

    def __init__(self, cache: SemanticCache, encode_many: EncodeMany, max_batch: int = 32,
                 max_wait: float = 0.004, threads: int = 2,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.cache = cache
        self.encode_many = encode_many
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.threads = threads
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str, str, asyncio.Future[LookupResult]]] = \
            asyncio.Queue()
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LookupWorker:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cache-lookup",
                                        initializer=_limit_threads, initargs=(self.threads,))
        self._task = asyncio.create_task(self._run(), name="cache-lookup-worker")
        self.cache.lookups = self
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cache.lookups = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            *_, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("lookup worker closed"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def submit(self, ns: str, prompt: str) -> LookupResult:
        """Queue one lookup and wait for its result."""
        fut: asyncio.Future[LookupResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((ns, prompt, fut))
        return await fut

    async def _collect(self) -> list[tuple[str, str, asyncio.Future[LookupResult]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                batch.append(self._queue.get_nowait() if not self._queue.empty()
                             else await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item[2].cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                await self._serve(loop, batch)
            except Exception as exc:  # the batch failed: every caller sees why
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)

    async def _serve(self, loop: asyncio.AbstractEventLoop,
                     batch: list[tuple[str, str, asyncio.Future[LookupResult]]]) -> None:
        prompts = [p for _, p, _ in batch]
        vectors = await loop.run_in_executor(self._pool, self.encode_many, prompts)
        by_ns: dict[str, list[int]] = {}
        for i, (ns, _, _) in enumerate(batch):
            by_ns.setdefault(ns, []).append(i)
        # search on the loop (the index is the loop's), collect rows of all namespaces
        plans = []
        for ns, idx in by_ns.items():
            rows = self.cache.candidates(ns, vectors[idx])
            plans.append((ns, idx, rows))
        flat_prompts = [prompts[i] for _, idx, _ in plans for i in idx]
        flat_vectors = np.concatenate([vectors[idx] for _, idx, _ in plans])
        offsets, flat_rows, start = [], [], 0
        for _, idx, rows in plans:
            offsets.append(start)
            flat_rows += [(qi + start, e, s) for qi, e, s in rows]
            start += len(idx)
        probs = await loop.run_in_executor(self._pool, self.cache.verify, flat_prompts,
                                           flat_vectors, flat_rows)
        k = 0
        for (ns, idx, rows), off in zip(plans, offsets, strict=True):
            mine = probs[k:k + len(rows)]
            k += len(rows)
            local = [(qi - off, e, s) for qi, e, s in flat_rows[k - len(rows):k]]
            for i, result in zip(idx, self.cache.decide(ns, len(idx), local, mine), strict=True):
                result.vector = vectors[i]
                fut = batch[i][2]
                if not fut.done():
                    fut.set_result(result)
