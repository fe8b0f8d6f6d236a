"""A dead part is known within seconds: heartbeats, tier beacons, a tier going down.

Real nats-server, real broker processes, the backend's real gRPC servicer over
a scripted engine. The client watches the brokers' beacons (`TierWatch`), as
the gateway does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from core.generation import Delta, GenerationRequest, Sampling
from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.beacons import TierWatch
from services.broker.client import BrokerClient, JobError
from services.broker.subjects import beacon_subject, consumer_name, stream_name
from services.common.natsd import NatsServer, free_port
from services.common.server import GrpcService
from services.gateway.broker_tier import BrokerTier
from services.gateway.domain import TierCall
from tests.broker.conftest import holder_of_one_job, scripted_service, until

pytestmark = pytest.mark.nats


@pytest.fixture
async def watched(nats_server: NatsServer) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(nats_server.url, tier_watch=TierWatch(dead_after_s=1.5),
                            stall_s=2.0) as client:
        yield client


async def slow_backend(port: int, delay_s: float) -> GrpcService:
    return (await scripted_service(port, delay_s))[0]


async def beaconing(client: BrokerClient, tier: str, brokers: int = 1) -> None:
    """Wait for `brokers` brokers' beacons of `tier` (a broker's first beacon can land
    after its gRPC port serves, and past the watch's start-up grace)."""
    watch = client.tier_watch
    assert watch is not None
    await until(lambda: len(watch.live_brokers(tier)) >= brokers, 10,
                f"{brokers} broker(s) beaconing {tier!r}")


def job(tier: str, max_tokens: int) -> broker_pb2.GenerateJob:
    return broker_pb2.GenerateJob(tier=tier, prompt="hello", tenant="t1", stream=True,
                                  sampling=common_pb2.SamplingParams(max_tokens=max_tokens))


async def ending(stream: AsyncIterator[broker_pb2.JobChunk]) -> list[str]:
    """Read a stream to its end: [error code, message] it ended with, else ['OK', '']."""
    try:
        async for _ in stream:
            pass
    except JobError as err:
        return [err.code, err.message]
    return ["OK", ""]


async def test_heartbeats_keep_a_quiet_job_alive(watched, broker) -> None:
    """Tokens 3 s apart (past the client's 2 s stall limit): the broker's heartbeats say
    the job lives, so it completes; the beacon names the tier up."""
    backend = await slow_backend(free_port(), delay_s=3.0)
    try:
        broker(f"quiet={backend.address}")
        await beaconing(watched, "quiet")
        stream = await watched.submit(job("quiet", 2), deadline_s=60)
        chunks = [c async for c in stream]
        assert "".join(c.text_delta for c in chunks) == " w0 w1"
        assert not any(c.heartbeat for c in chunks)  # heartbeats are not yielded
        assert watched.tier_watch is not None and watched.tier_watch.problem("quiet") is None
    finally:
        await backend.drain()


async def test_a_killed_broker_fails_its_streams_and_new_jobs_within_seconds(
        watched, broker) -> None:
    backend = await slow_backend(free_port(), delay_s=0.5)
    try:
        only = broker(f"bkill={backend.address}")
        await beaconing(watched, "bkill")
        streams = [(await watched.submit(job("bkill", 60), deadline_s=90)).__aiter__()
                   for _ in range(4)]
        assert (await streams[0].__anext__()).text_delta == " w0"
        only.kill()
        killed = time.monotonic()
        ends = await asyncio.gather(*(ending(s) for s in streams))
        took = time.monotonic() - killed

        assert {code for code, _ in ends} == {"UNAVAILABLE"}, ends
        assert all("'bkill'" in message and "no live broker" in message
                   for _, message in ends), ends
        assert took < 5, took
        start = time.monotonic()
        with pytest.raises(JobError) as refused:
            await watched.submit(job("bkill", 4), deadline_s=90)
        assert refused.value.code == "UNAVAILABLE" and "'bkill'" in refused.value.message
        assert time.monotonic() - start < 1
    finally:
        await backend.drain()


async def test_a_tier_whose_only_backend_dies_fails_fast_and_serves_again_on_its_return(
        watched, broker) -> None:
    port = free_port()
    backend = await slow_backend(port, delay_s=0.5)
    b = broker(f"bdead={backend.address}")
    await beaconing(watched, "bdead")
    streams = [(await watched.submit(job("bdead", 60), deadline_s=90)).__aiter__()
               for _ in range(6)]  # 4 run (the replica's slots), 2 wait
    assert (await streams[0].__anext__()).text_delta == " w0"
    await backend.drain()  # the only replica is gone, its calls cut
    killed = time.monotonic()
    ends = await asyncio.gather(*(ending(s) for s in streams))
    took = time.monotonic() - killed

    assert {code for code, _ in ends} == {"UNAVAILABLE"}, ends
    assert all("no healthy backend replica" in m and "'bdead'" in m for _, m in ends), ends
    assert took < 5, took
    watch = watched.tier_watch
    assert watch is not None
    await until(lambda: watch.problem("bdead") is not None, 5, "tier known down")
    start = time.monotonic()
    with pytest.raises(JobError) as refused:
        await watched.submit(job("bdead", 4), deadline_s=90)
    assert refused.value.code == "UNAVAILABLE" and "no healthy backend" in refused.value.message
    assert time.monotonic() - start < 1
    assert b.metric("broker_terminations_total") >= 1

    back = await slow_backend(port, delay_s=0.01)  # restarted on the same port
    try:
        await until(lambda: watch.problem("bdead") is None, 10, "tier up again")
        stream = await watched.submit(job("bdead", 3), deadline_s=30)
        assert "".join([c.text_delta async for c in stream]) == " w0 w1 w2"
    finally:
        await back.drain()


async def test_a_job_whose_broker_dies_is_resumed_on_another_without_waiting_for_redelivery(
        watched, broker) -> None:
    """Two brokers, JetStream's ack wait at its 30 s default: SIGKILL the one running a
    stream and the gateway's broker tier resumes it on the other within seconds, the
    text going on from where it stopped, nothing repeated."""
    backend = await slow_backend(free_port(), delay_s=0.2)
    try:
        brokers = [broker(f"orph={backend.address}") for _ in range(2)]
        await beaconing(watched, "orph", brokers=2)
        tier = BrokerTier("orph", watched)
        call = TierCall(GenerationRequest(prompt="hello", sampling=Sampling(max_tokens=30),
                                          request_id="orphan-test"), tenant="t1",
                        timeout_s=60)
        stream = tier.generate(call)
        text = [(await stream.__anext__()).text]
        brokers[await holder_of_one_job(brokers)].kill()
        killed = time.monotonic()
        gap = 0.0
        async for delta in stream:
            if gap == 0.0:
                gap = time.monotonic() - killed
            text.append(delta.text)
        assert "".join(text) == "".join(f" w{i}" for i in range(30))
        assert gap < 5, gap
    finally:
        await backend.drain()


async def ghost_beacons(client: BrokerClient, tier: str, broker_id: str) -> None:
    """Beacon `tier` as a live broker `broker_id` with a healthy replica, until cancelled."""
    beacon = broker_pb2.TierBeacon(tier=tier, broker_id=broker_id, replicas=1,
                                   healthy_replicas=1, free_slots=4)
    while True:
        await client.nc.publish(beacon_subject(tier), beacon.SerializeToString())
        await asyncio.sleep(0.3)


async def test_a_job_taken_by_a_broker_that_died_before_naming_itself_is_resumed(
        watched, broker) -> None:
    """A broker killed between taking a job from the queue and its first heartbeat: the
    client never learnt who held the job. Once that broker's beacons stop and the queue's
    consumer shows the job delivered, it is resumed on a live broker within seconds
    instead of after JetStream's 30 s ack wait; a broker dying while the job still waits
    in the queue does not resubmit it."""
    backend = await slow_backend(free_port(), delay_s=0.05)
    ghosts: list[asyncio.Task[None]] = []
    try:
        broker(f"ghost={backend.address}").kill()  # leaves the stream and its consumers
        taker = await watched.js.pull_subscribe_bind(
            durable=consumer_name("ghost", "interactive"), stream=stream_name("ghost"))
        ghosts = [asyncio.create_task(ghost_beacons(watched, "ghost", b))
                  for b in ("taker", "bystander")]
        await beaconing(watched, "ghost", brokers=2)
        tier = BrokerTier("ghost", watched)
        call = TierCall(GenerationRequest(prompt="hello", sampling=Sampling(max_tokens=5),
                                          request_id="ghost-test"), tenant="t1",
                        timeout_s=60)
        answer = asyncio.create_task(text_of(tier.generate(call)))

        await asyncio.sleep(2.5)  # past the client's stall limit, the job still queued
        ghosts.pop().cancel()  # the bystander dies
        await asyncio.sleep(3.0)
        assert not answer.done()
        info = await watched.js.consumer_info(stream_name("ghost"),
                                              consumer_name("ghost", "interactive"))
        assert info.num_pending == 1 and info.num_ack_pending == 0  # not resubmitted

        taken = await taker.fetch(1, timeout=5)  # taken, never acked, no heartbeat sent
        assert len(taken) == 1
        broker(f"ghost={backend.address}")
        await until(lambda: "taker" in watch_of(watched).live_brokers("ghost")
                    and len(watch_of(watched).live_brokers("ghost")) == 2, 10,
                    "the new broker beaconing beside the taker")
        ghosts.pop().cancel()  # the taker dies
        died = time.monotonic()
        text = await asyncio.wait_for(answer, 20)
        took = time.monotonic() - died

        assert text == " w0 w1 w2 w3 w4"
        assert took < 8, took  # the taker's ack wait is 30 s
    finally:
        for task in ghosts:
            task.cancel()
        await backend.drain()


async def text_of(deltas: AsyncIterator[Delta]) -> str:
    return "".join([d.text async for d in deltas])


def watch_of(client: BrokerClient) -> TierWatch:
    assert client.tier_watch is not None
    return client.tier_watch
