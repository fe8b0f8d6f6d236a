"""Three-node JetStream cluster with replicated streams: one node killed mid-run loses no job."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import nats
import pytest

from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.client import BrokerClient
from services.common.natscluster import NatsCluster

pytestmark = [pytest.mark.nats, pytest.mark.vllm]


@pytest.fixture
async def cluster() -> AsyncIterator[NatsCluster]:
    async with NatsCluster(3) as c:
        yield c


async def run_50_jobs_killing_a_node(cluster: NatsCluster, broker, backend: str,
                                     deadline_s: float = 240) -> None:
    broker(f"c3={backend}", "--stream_replicas", "3", "--ack_wait_s", "3",
           "--max_batch", "8", nats_url=cluster.url)
    finals: Counter[str] = Counter()
    # The client stays off the node that dies: replies in flight on a dropped core-NATS
    # connection are lost by design (the client then reports UNAVAILABLE); what this test
    # checks is that the queue and the broker survive the stream leader's death.
    nc = await nats.connect(servers=cluster.urls)
    try:
        leader = int((await nc.jetstream().stream_info("GEN_C3")).cluster.leader.rsplit("-", 1)[1])
    finally:
        await nc.close()
    client_urls = [u for i, u in enumerate(cluster.urls) if i != leader]
    async with BrokerClient(client_urls, publish_retry_s=30.0) as client:
        async def count(msg) -> None:
            chunk = broker_pb2.JobChunk.FromString(msg.data)
            if chunk.finish_reason and not chunk.error.code:
                finals[chunk.job_id] += 1

        await client.nc.subscribe("_CMESH_TEST.>", cb=count)
        jobs = []
        for i in range(50):
            j = broker_pb2.GenerateJob(
                tier="c3", job_id=f"job-{i}", prompt=f"Count to {i % 7 + 2}.", chat=True,
                stream=False, reply_subject=f"_CMESH_TEST.{i}",
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=6))
            jobs.append(await client.submit(j, deadline_s=deadline_s))
            if i == 20:  # the stream's leader dies with jobs queued and running
                await cluster.stop(leader)
        texts = await asyncio.gather(*(j.text() for j in jobs), return_exceptions=True)
        await asyncio.sleep(4.0)  # past the ack wait: a lost ack would show as a repeat

    failed = {f"job-{i}": repr(t) for i, t in enumerate(texts) if not (isinstance(t, str) and t)}
    assert not failed, failed
    assert sorted(finals) == sorted(f"job-{i}" for i in range(50))
    assert set(finals.values()) == {1}, finals


async def test_fifty_jobs_survive_a_nats_node_kill(cluster, broker, smollm2_backend) -> None:
    await run_50_jobs_killing_a_node(cluster, broker, smollm2_backend.address)
