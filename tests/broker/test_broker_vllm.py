"""The broker with real vLLM SmolLM2 backends on the CPU and a real nats-server.

Replica A is the suite's shared backend; replica B (small KV cache) is started
here and killed by the last test of this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.client import JobError
from services.broker.dispatch import Replica, rendezvous
from services.broker.jetstream import QueueLimits, ensure_stream
from services.broker.subjects import job_subject
from tests.broker.conftest import holder_of_one_job
from tests.support import ServiceProcess, start_service

pytestmark = [pytest.mark.vllm, pytest.mark.nats]

STORY = "Write a long story about a lighthouse keeper."


@pytest.fixture(scope="module")
def replica_b(smollm2_path) -> Iterator[ServiceProcess]:
    service = start_service(
        "services.backend", "--model", str(smollm2_path), "--served_name", "small",
        "--max_tokens_limit", "512", "--kv_cache_gib", "0.5", "--drain_seconds", "0")
    try:
        service.wait_serving(timeout=600)
        yield service
    finally:
        service.stop()


def job(tier: str, prompt: str, max_tokens: int, stream: bool = True,
        key: str = "") -> broker_pb2.GenerateJob:
    return broker_pb2.GenerateJob(
        tier=tier, prompt=prompt, chat=True, stream=stream, affinity_key=key,
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens))


async def direct(address: str, prompt: str, max_tokens: int) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await backend_pb2_grpc.BackendStub(channel).Complete(
            backend_pb2.GenerateRequest(
                prompt=prompt, chat=True,
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens)),
            timeout=120)
        return reply.text


async def in_flight(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        load = await backend_pb2_grpc.BackendStub(channel).GetLoad(
            backend_pb2.GetLoadRequest(), timeout=5)
        return int(load.in_flight)


async def test_greedy_job_gives_the_direct_backend_text(client, broker, smollm2_backend) -> None:
    a = smollm2_backend.address
    broker(f"vgreedy={a}")
    expected = await direct(a, "What is the capital of France?", 24)
    unary = [c async for c in await client.submit(
        job("vgreedy", "What is the capital of France?", 24, stream=False), deadline_s=120)]
    chunks = [c async for c in await client.submit(
        job("vgreedy", "What is the capital of France?", 24), deadline_s=120)]

    assert "Paris" in expected
    assert len(unary) == 1 and unary[0].text_delta == expected
    assert len(chunks) > 1 and "".join(c.text_delta for c in chunks) == expected


async def test_cancel_aborts_the_backend_call(client, broker, smollm2_backend) -> None:
    a = smollm2_backend.address
    broker(f"vcancel={a}")
    running = await client.submit(job("vcancel", STORY, 400), deadline_s=120)
    stream = running.__aiter__()
    await stream.__anext__()
    assert await in_flight(a) == 1
    await running.cancel()
    seconds = 0.0
    while await in_flight(a) != 0:
        await asyncio.sleep(0.02)
        seconds += 0.02
        assert seconds < 1.0, "backend still runs the cancelled job after 1 s"
    await stream.aclose()


def served(backend: ServiceProcess) -> float:
    """Requests the backend has finished, whatever their outcome."""
    try:
        return backend.metric("backend_requests_total")
    except KeyError:
        return 0.0


async def test_deadline_passed_in_queue_never_reaches_the_backend(client, broker,
                                                                   smollm2_backend) -> None:
    await ensure_stream(client.js, "vlate", QueueLimits())
    client.deadline_grace_s = 60.0  # so the error below can only come from the broker
    late = await client.submit(job("vlate", "Too late?", 8), deadline_s=0.2)
    await asyncio.sleep(0.4)
    before = served(smollm2_backend)
    broker(f"vlate={smollm2_backend.address}")
    with pytest.raises(JobError) as err:
        await late.text()
    assert err.value.code == "DEADLINE_EXCEEDED"
    assert served(smollm2_backend) == before


async def test_malformed_job_is_terminated_and_the_next_runs_on_vllm(
        client, broker, smollm2_backend) -> None:
    broker(f"vpoison={smollm2_backend.address}")
    await client.js.publish(job_subject("vpoison", "interactive", "t"), b"\x08\xff\xff")
    bad = job("vpoison", "Hello", 8)
    bad.sampling.max_tokens = -1
    with pytest.raises(JobError) as err:
        await (await client.submit(bad, deadline_s=60)).text()
    good = await (await client.submit(job("vpoison", "What is the capital of France?", 16),
                                      deadline_s=120)).text()
    assert err.value.code == "INVALID_ARGUMENT" and err.value.field.endswith("max_tokens")
    assert "Paris" in good


async def first_chunk_order(jobs: dict[str, object]) -> list[str]:
    """Names of the jobs in the order their first chunk arrived (= start order, one slot)."""
    seen: list[str] = []

    async def consume(name: str, stream) -> None:
        async for _ in stream:
            if name not in seen:
                seen.append(name)

    await asyncio.gather(*(consume(n, j) for n, j in jobs.items()))
    return seen


async def drain(stream) -> None:
    async for _ in stream:
        pass


async def test_interactive_overtakes_queued_batch_on_vllm(client, broker,
                                                          smollm2_backend) -> None:
    broker(f"vprio={smollm2_backend.address}", "--max_slots_per_replica", "1",
           "--lookahead", "16", "--batch_share", "0.25")
    jobs = {}
    for i in range(6):
        j = job("vprio", f"Name a fruit, {i}.", 4)
        j.priority = broker_pb2.PRIORITY_BATCH
        jobs[f"b{i}"] = await client.submit(j, deadline_s=120)
    first = jobs["b0"].__aiter__()
    await first.__anext__()  # b0 runs; the other batch jobs wait
    for i in range(3):
        jobs[f"i{i}"] = await client.submit(job("vprio", f"Name a colour, {i}.", 4),
                                            deadline_s=120)
    rest = {n: j for n, j in jobs.items() if n != "b0"}
    order, _ = await asyncio.gather(first_chunk_order(rest), drain(first))

    last_interactive = max(order.index(f"i{i}") for i in range(3))
    assert last_interactive <= 3, order  # at most one batch start (share 0.25) among them


async def test_a_flooding_tenant_does_not_starve_another_on_vllm(client, broker,
                                                                 smollm2_backend) -> None:
    limit = 4
    broker(f"vfair={smollm2_backend.address}", "--max_slots_per_replica", "1",
           "--tenant_max_jobs", str(limit))
    jobs, refused = {}, 0
    for i in range(12):
        j = job("vfair", f"Name an animal, {i}.", 4)
        j.tenant = "flood"
        try:
            jobs[f"a{i}"] = await client.submit(j, deadline_s=120)
        except JobError as exc:
            assert exc.code == "RESOURCE_EXHAUSTED" and exc.retry_after_ms
            refused += 1
    other = job("vfair", "Name a tree.", 4)
    other.tenant = "other"
    jobs["b"] = await client.submit(other, deadline_s=120)
    order = await first_chunk_order(jobs)

    assert refused > 0
    # the stated bound: at most `tenant_max_jobs` of the flood start before it
    assert order.index("b") <= limit, order


async def test_broker_killed_mid_job_second_broker_finishes_it_once(
        client, broker, smollm2_backend, nats_server) -> None:
    a = smollm2_backend.address
    brokers = [broker(f"vha={a}", "--ack_wait_s", "2") for _ in range(2)]
    expected = await direct(a, STORY, 160)
    finals: list[broker_pb2.JobChunk] = []
    reply = client.nc.new_inbox()

    async def count(msg) -> None:
        chunk = broker_pb2.JobChunk.FromString(msg.data)
        if chunk.finish_reason:
            finals.append(chunk)

    await client.nc.subscribe(reply, cb=count)
    j = job("vha", STORY, 160)  # long enough to be running still when the holder is found
    j.reply_subject = reply
    running = await client.submit(j, deadline_s=120)
    stream = running.__aiter__()
    first = await stream.__anext__()
    brokers[await holder_of_one_job(brokers)].kill()
    rest = [c async for c in stream]
    await asyncio.sleep(1.0)

    assert first.text_delta + "".join(c.text_delta for c in rest) == expected
    assert len(finals) == 1 and finals[0].attempt == 2
    assert len(running.attempts) == 2


async def test_backend_killed_mid_generation_jobs_continue_elsewhere(
        client, broker, smollm2_backend, replica_b) -> None:
    a, b = smollm2_backend.address, replica_b.address
    broker(f"vsurv={b},{a}")
    expected = await direct(a, STORY, 48)
    # affinity keys whose first choice is replica B, so both jobs start there
    keys = [k for k in (f"k{i}" for i in range(50))
            if rendezvous(k, [Replica(a), Replica(b)])[0].address == b][:2]
    unary = await client.submit(job("vsurv", STORY, 48, stream=False, key=keys[0]),
                                deadline_s=180)
    streaming = await client.submit(job("vsurv", STORY, 48, key=keys[1]), deadline_s=180)
    stream = streaming.__aiter__()
    head = [await stream.__anext__() for _ in range(6)]
    assert await in_flight(b) == 2
    replica_b.kill()
    tail = [c async for c in stream]
    whole = [c async for c in unary]

    assert "".join(c.text_delta for c in head + tail) == expected
    assert len(whole) == 1 and whole[0].text_delta == expected
    assert whole[0].usage.completion_tokens == 48
