"""Micro-batching coalesces concurrent requests and reports failures to every caller."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.batcher import BatchedEmbedder, MicroBatcher
from core.embedder import Embedder, thread_budget


async def test_concurrent_requests_share_batches() -> None:
    sizes: list[int] = []

    def double(items: list[int]) -> list[int]:
        time.sleep(0.01)
        return [2 * i for i in items]

    async with MicroBatcher(double, max_batch=8, max_wait=0.02, on_batch=sizes.append) as b:
        results = await asyncio.gather(*(b.submit(i) for i in range(32)))
    assert results == [2 * i for i in range(32)]
    assert max(sizes) == 8
    assert len(sizes) <= 6


async def test_batch_failure_reaches_every_caller() -> None:
    def boom(items: list[int]) -> list[int]:
        raise ValueError("bad batch")

    async with MicroBatcher(boom, max_batch=4, max_wait=0.01) as b:
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(4)),
                                        return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_submit_outside_context_fails() -> None:
    with pytest.raises(RuntimeError):
        await MicroBatcher(lambda items: items).submit(1)


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads"):
        BatchedEmbedder(None, threads=0)  # type: ignore[arg-type]


async def test_batches_run_with_the_thread_cap_in_their_worker() -> None:
    """The cap is per calling thread in torch: it must hold where the batch runs, and
    leave the caller's own setting alone; the vectors stay those of a plain encode."""
    import numpy as np
    import torch

    embedder = Embedder()
    seen: list[tuple[int, int]] = []

    class Recording:
        dim = embedder.dim

        def encode_requests(self, texts: list[str]) -> np.ndarray:
            seen.append((torch.get_num_threads(), thread_budget()))
            return embedder.encode_requests(texts)

    before = torch.get_num_threads()
    async with BatchedEmbedder(Recording(), threads=1) as batched:  # type: ignore[arg-type]
        vectors = await asyncio.gather(*(batched.encode_one(f"q {i}") for i in range(3)))
    assert seen and set(seen) == {(1, 1)}  # torch's pool and ONNX Runtime's budget
    assert torch.get_num_threads() == before
    plain = embedder.encode([f"q {i}" for i in range(3)])
    assert np.allclose(np.stack(vectors), plain, atol=1e-5)
