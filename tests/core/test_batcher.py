"""Micro-batching coalesces concurrent requests and reports failures to every caller."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.batcher import MicroBatcher


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
