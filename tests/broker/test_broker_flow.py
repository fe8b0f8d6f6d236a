"""Job flow, backpressure, deadlines, poison jobs, priorities and fairness.

Real nats-server, real broker processes, the backend's real gRPC servicer over
a scripted engine (exact timings; answers from vLLM are in test_broker_vllm.py).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.client import JobError
from services.broker.jetstream import QueueLimits, ensure_stream
from services.broker.subjects import job_subject
from tests.broker.conftest import until

pytestmark = pytest.mark.nats


def job(tier: str, prompt: str = "hello", *, stream: bool = True, tenant: str = "t1",
        batch: bool = False, max_tokens: int = 8) -> broker_pb2.GenerateJob:
    return broker_pb2.GenerateJob(
        tier=tier, prompt=prompt, tenant=tenant, stream=stream,
        priority=broker_pb2.PRIORITY_BATCH if batch else broker_pb2.PRIORITY_INTERACTIVE,
        sampling=common_pb2.SamplingParams(temperature=0, max_tokens=max_tokens))


EXPECTED = "".join(f" w{i}" for i in range(8))


async def test_stream_and_unary_answers_arrive_whole(client, scripted_backend, broker) -> None:
    address, _engine = await scripted_backend()
    b = broker(f"flow={address}")
    streamed = await client.submit(job("flow"), deadline_s=20)
    chunks = [c async for c in streamed]
    unary = [c async for c in await client.submit(job("flow", stream=False), deadline_s=20)]

    assert "".join(c.text_delta for c in chunks) == EXPECTED
    assert len(chunks) == 8 and chunks[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert [c.offset for c in chunks] == [len(EXPECTED[: 3 * i]) for i in range(8)]
    assert len(unary) == 1 and unary[0].text_delta == EXPECTED
    assert unary[0].usage.completion_tokens == 8
    await until(lambda: b.metric("broker_jobs_completed_total") == 2, 5, "two acks")


async def test_full_queue_refuses_at_once_with_a_retry_hint(client) -> None:
    await ensure_stream(client.js, "full", QueueLimits(max_jobs=3, tenant_max_jobs=3))
    for i in range(3):
        await client.submit(job("full", f"q{i}"))
    start = time.perf_counter()
    with pytest.raises(JobError) as err:
        await client.submit(job("full", "one too many"))
    elapsed = time.perf_counter() - start

    assert err.value.code == "RESOURCE_EXHAUSTED"
    assert err.value.retry_after_ms and err.value.retry_after_ms > 0
    assert elapsed < 0.05


async def test_deadline_passed_in_queue_is_dropped_unrun(client, scripted_backend,
                                                         broker) -> None:
    address, engine = await scripted_backend()
    await ensure_stream(client.js, "late", QueueLimits())
    client.deadline_grace_s = 30.0  # so the error below can only come from the broker
    expired = await client.submit(job("late", "too late"), deadline_s=0.2)
    await asyncio.sleep(0.4)
    broker(f"late={address}")
    with pytest.raises(JobError) as err:
        await expired.text()
    fresh = await (await client.submit(job("late", "in time"), deadline_s=20)).text()

    assert err.value.code == "DEADLINE_EXCEEDED" and "queue" in err.value.message
    assert engine.started == ["in time"] and fresh == EXPECTED


async def test_malformed_job_is_terminated_and_the_next_runs(client, scripted_backend,
                                                             broker) -> None:
    address, _engine = await scripted_backend()
    b = broker(f"poison={address}")
    await client.js.publish(job_subject("poison", "interactive", "t1"), b"\xff not a protobuf")
    bad = job("poison")
    bad.job_id = "has spaces"
    with pytest.raises(JobError) as err:
        await (await client.submit(bad, deadline_s=10)).text()
    good = await (await client.submit(job("poison"), deadline_s=10)).text()

    assert err.value.code == "INVALID_ARGUMENT" and err.value.field == "job_id"  # as data
    assert good == EXPECTED
    await until(lambda: b.metric("broker_terminations_total") == 2, 5, "two terms")


async def test_interactive_overtakes_queued_batch(client, scripted_backend, broker) -> None:
    address, engine = await scripted_backend(slots=1, delay_s=0.05)
    broker(f"prio={address}", "--lookahead", "16", "--batch_share", "0.25")
    batch = [await client.submit(job("prio", f"b{i}", batch=True)) for i in range(8)]
    await until(lambda: len(engine.started) == 1, 5, "first batch job started")
    interactive = [await client.submit(job("prio", f"i{i}")) for i in range(4)]
    await asyncio.gather(*(j.text() for j in batch + interactive))

    order = engine.started
    last_interactive = max(order.index(f"i{i}") for i in range(4))
    batch_before = [p for p in order[1:last_interactive] if p.startswith("b")]
    # every fourth start goes to batch while interactive waits (share 0.25): no starvation
    assert len(batch_before) == 1, order
    assert order[0] == "b0"


async def test_a_flooding_tenant_does_not_starve_another(client, scripted_backend,
                                                         broker) -> None:
    address, engine = await scripted_backend(slots=1, delay_s=0.02)
    limit = 6
    broker(f"fair={address}", "--tenant_max_jobs", str(limit), "--lookahead", "4")
    flood, refused = [], 0
    for i in range(20):
        try:
            flood.append(await client.submit(job("fair", f"a{i}", tenant="flood")))
        except JobError as exc:
            assert exc.code == "RESOURCE_EXHAUSTED"
            refused += 1
    other = await client.submit(job("fair", "b0", tenant="other"))
    await asyncio.gather(*(j.text() for j in [*flood, other]))

    order = engine.started
    assert refused > 0 and len(flood) >= limit
    # stated bound: at most `tenant_max_jobs` of the flooding tenant's jobs start first
    assert order.index("b0") <= limit, order


async def test_sigterm_drains_running_jobs_and_fetches_no_more(client, scripted_backend,
                                                               broker) -> None:
    address, engine = await scripted_backend(slots=2, delay_s=0.05)
    first = broker(f"drain={address}")
    running = await client.submit(job("drain", "running", max_tokens=30), deadline_s=30)
    await until(lambda: engine.started == ["running"], 5, "job started")
    first.proc.send_signal(signal.SIGTERM)
    answer = await running.text()
    code = await asyncio.to_thread(first.proc.wait, 20)
    queued = await client.submit(job("drain", "after"), deadline_s=30)
    await asyncio.sleep(0.5)
    assert engine.started == ["running"]  # the draining broker took nothing new
    broker(f"drain={address}")
    later = await queued.text()

    assert answer == "".join(f" w{i}" for i in range(30)) and code == 0
    assert later == EXPECTED and engine.started == ["running", "after"]


async def test_status_reflection_and_metrics(client, scripted_backend, broker) -> None:
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    from protos.broker.v1 import broker_pb2_grpc

    address, _ = await scripted_backend(slots=3)
    b = broker(f"ops={address}")
    keyed = job("ops")
    keyed.affinity_key = "conversation-7"
    await (await client.submit(keyed, deadline_s=20)).text()
    async with grpc.aio.insecure_channel(b.address) as channel:
        for _ in range(100):  # the backend's load is polled: wait for the finished job to leave
            status = await broker_pb2_grpc.BrokerStub(channel).GetStatus(
                broker_pb2.GetStatusRequest(), timeout=5)
            if status.replicas[0].free_slots == 3:
                break
            await asyncio.sleep(0.05)
    with grpc.insecure_channel(b.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert {"cascademesh.broker.v1.Broker", "grpc.health.v1.Health"} <= services
    assert [(r.tier, r.address, r.healthy) for r in status.replicas] == [("ops", address, True)]
    assert status.jobs_completed == 1 and status.replicas[0].free_slots == 3
    assert {q.job_class for q in status.queues} == {"interactive", "batch"}
    assert b.metric("broker_affinity_hits_total") == 1
    assert b.metric("broker_dispatches_total") == 1
    assert b.metric("broker_fetched_batch_size_count") == 1
    assert b.metric("broker_queue_wait_seconds_count") == 1
    await until(lambda: b.metric("broker_queue_depth") == 0, 5, "depth gauge")
