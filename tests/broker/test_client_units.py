"""The broker client's job stream without NATS: chunks lost to a reconnect or to a
gap fail the job UNAVAILABLE (retryable) at once instead of at its deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from protos.broker.v1 import broker_pb2
from services.broker.client import JobError, JobStream


class _Client:
    def __init__(self) -> None:
        self.reconnects = 0
        self.cancelled: list[str] = []
        self.tier_watch = None  # no beacons: only the deadline and reconnects end a wait
        self.stall_s = 2.0

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


class _Sub:
    async def unsubscribe(self) -> None:
        pass


def stream_of(client: _Client, *chunks: broker_pb2.JobChunk,
              deadline_in_s: float = 30.0) -> JobStream:
    queue: asyncio.Queue[broker_pb2.JobChunk] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    job = broker_pb2.GenerateJob(job_id="j1", stream=True)
    return JobStream(client, job, _Sub(), queue,  # type: ignore[arg-type]
                     time.time() + deadline_in_s, grace_s=0.0)


async def read(stream: JobStream) -> list[Any]:
    return [c.text_delta async for c in stream]


async def test_a_gap_in_the_offsets_fails_the_job_unavailable_and_cancels_it() -> None:
    client = _Client()
    stream = stream_of(client, broker_pb2.JobChunk(text_delta="one", offset=0),
                       broker_pb2.JobChunk(text_delta=" three", offset=7))
    with pytest.raises(JobError) as err:
        await read(stream)
    assert err.value.code == "UNAVAILABLE" and "chunks lost" in str(err.value)
    assert client.cancelled == ["j1"]


async def test_silence_after_a_reconnect_fails_the_job_long_before_its_deadline() -> None:
    client = _Client()
    stream = stream_of(client, broker_pb2.JobChunk(text_delta="one", offset=0))
    client.reconnects = 1  # the connection came back while the job ran
    start = time.monotonic()
    with pytest.raises(JobError) as err:
        await read(stream)
    assert err.value.code == "UNAVAILABLE" and time.monotonic() - start < 5
    assert client.cancelled == ["j1"]


async def test_silence_without_a_reconnect_still_waits_for_the_deadline() -> None:
    client = _Client()
    stream = stream_of(client, broker_pb2.JobChunk(text_delta="one", offset=0),
                       deadline_in_s=1.5)
    start = time.monotonic()
    with pytest.raises(JobError) as err:
        await read(stream)
    assert err.value.code == "DEADLINE_EXCEEDED" and time.monotonic() - start >= 1.4
