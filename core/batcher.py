"""Micro-batching: many concurrent single requests, one batched model call.

A transformer encodes 32 sentences in little more time than one, so a
service that embeds each request alone wastes most of the machine. The
batcher holds each request for at most `max_wait` seconds (or until
`max_batch` are waiting), runs the batch function once in a worker thread so
the event loop stays free, and hands every caller its own row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

from core.embedder import Embedder, limit_threads

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent `submit` calls into calls of `batch_fn` on up to `max_batch` items.

    Use as an async context manager; `batch_fn` runs in one worker thread, one
    batch at a time, so it needs no locking of its own. `on_batch` (if given)
    sees each batch size, for metrics.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[T]], Sequence[R]],
        max_batch: int = 32,
        max_wait: float = 0.005,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self._fn = batch_fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MicroBatcher[T, R]:
        self._task = asyncio.create_task(self._run(), name="micro-batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("batcher closed"))

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result."""
        if self._task is None:
            raise RuntimeError("MicroBatcher used outside its `async with`")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    while len(batch) < self.max_batch and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(len(live))
            try:
                results = await asyncio.to_thread(self._fn, [item for item, _ in live])
            except Exception as exc:  # the batch failed: every caller sees why
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


class BatchedEmbedder:
    """An `Embedder` behind a `MicroBatcher`: `await encode_one(text)` -> (dim,) vector.

    `threads` (if set) caps torch's threads for the batches (see `limit_threads`).
    """

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int = 32,
        max_wait: float = 0.005,
        on_batch: Callable[[int], None] | None = None,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        self.embedder = embedder
        self.threads = threads
        self._batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._encode_rows, max_batch=max_batch, max_wait=max_wait, on_batch=on_batch
        )

    def _encode_rows(self, texts: list[str]) -> list[np.ndarray]:
        if self.threads is not None:
            limit_threads(self.threads)  # runs in the batch's worker thread
        return list(self.embedder.encode_requests(texts))

    async def __aenter__(self) -> BatchedEmbedder:
        await self._batcher.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._batcher.__aexit__(*exc)

    async def encode_one(self, text: str) -> np.ndarray:
        """The unit embedding of `text`, computed in a batch with concurrent callers."""
        return await self._batcher.submit(text)
