"""The cache service over real gRPC and a real nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache.verifier import FeatureVerifier
from core.embedder import Embedder
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from protos.common.v1 import common_pb2
from services.cache.main import SERVICE_NAME, CacheNode
from services.cache.settings import CacheSettings
from services.common.natsd import NatsServer, free_port

pytestmark = pytest.mark.nats
GREEDY = common_pb2.SamplingParams(temperature=0.0)


def scope(tenant: str = "acme") -> cache_pb2.Scope:
    return cache_pb2.Scope(tenant=tenant, sampling=GREEDY)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server


@pytest.fixture
async def stub(nats_server: NatsServer, embedder: Embedder
               ) -> AsyncIterator[cache_pb2_grpc.CacheStub]:
    # δ = 0.25: the QQP calibration certifies paraphrase hits only from about 0.15 up.
    settings = CacheSettings(nats_url=nats_server.url, port=0, max_prompt_chars=200, delta=0.25)
    async with (CacheNode(settings, embedder, FeatureVerifier.load()) as node,
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel):
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield cache_pb2_grpc.CacheStub(channel)


@pytest.mark.parametrize(("call", "request_msg", "field"), [
    ("Lookup", cache_pb2.LookupRequest(scope=scope(), prompt=""), "prompt"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope(), prompt="x" * 201), "prompt"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope(""), prompt="hello"), "scope.tenant"),
    ("Store", cache_pb2.StoreRequest(scope=scope(""), prompt="hi", answer="a"), "scope.tenant"),
    ("Store", cache_pb2.StoreRequest(scope=scope(), prompt="hi", answer=" "), "answer"),
    ("Invalidate", cache_pb2.InvalidateRequest(entry_id="e1"), "tenant"),
    # A tenant starts every namespace key: path-like or huge names are refused.
    ("Store", cache_pb2.StoreRequest(scope=scope("dev/../guest"), prompt="hi", answer="a"),
     "scope.tenant"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope("t" * 10_000), prompt="hi"), "scope.tenant"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope("dev guest"), prompt="hi"), "scope.tenant"),
    ("Invalidate", cache_pb2.InvalidateRequest(tenant="dev/..", whole_tenant=True), "tenant"),
    ("Stats", cache_pb2.StatsRequest(tenant="t" * 65), "tenant"),
    ("Audit", cache_pb2.AuditRequest(entry_id="e1", hit=True), "tenant"),
    ("Audit", cache_pb2.AuditRequest(tenant="acme", hit=True), "entry_id"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope(), prompt="hi", in_flight=[
        cache_pb2.InFlight(prompt="hello", embedding=[0.1] * 3)]), "in_flight[0].embedding"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope(), prompt="hi", in_flight=[
        cache_pb2.InFlight(prompt=" ", embedding=[0.1] * 384)]), "in_flight[0].prompt"),
    ("Lookup", cache_pb2.LookupRequest(scope=scope(), prompt="hi", in_flight=[
        cache_pb2.InFlight(prompt="hello", embedding=[0.1] * 384)] * 33), "in_flight"),
])
async def test_bad_input_is_invalid_argument(stub: cache_pb2_grpc.CacheStub, call: str,
                                             request_msg: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stub, call)(request_msg)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field + ":")


async def test_store_lookup_stats(stub: cache_pb2_grpc.CacheStub) -> None:
    miss = await stub.Lookup(cache_pb2.LookupRequest(scope=scope("nobody"), prompt="hello"))
    assert not miss.hit
    stored = await stub.Store(cache_pb2.StoreRequest(
        scope=scope(), prompt="How do I reset my password?", answer="Settings > Security",
        tier="small", usage=common_pb2.Usage(prompt_tokens=7, completion_tokens=3)))
    assert stored.stored and stored.entry_id
    hit = await stub.Lookup(cache_pb2.LookupRequest(scope=scope(),
                                                    prompt="How can I reset my password?"))
    assert hit.hit and hit.entry.id == stored.entry_id and hit.entry.hit_count == 1
    assert hit.entry.usage.completion_tokens == 3 and hit.verifier_probability > 0.5
    hot = cache_pb2.Scope(tenant="acme", sampling=common_pb2.SamplingParams(temperature=0.7))
    refused = await stub.Store(cache_pb2.StoreRequest(scope=hot, prompt="a poem", answer="..."))
    assert not refused.stored and "temperature" in refused.reason
    stats = await stub.Stats(cache_pb2.StatsRequest(tenant="acme"))
    assert stats.entries == 1 and stats.hits == 1 and not stats.degraded
    assert stats.delta == pytest.approx(0.25) and 0 < stats.expected_wrong_hit_rate <= 0.25
    removed = await stub.Invalidate(cache_pb2.InvalidateRequest(tenant="acme", whole_tenant=True))
    assert removed.removed == 1


async def test_a_verdict_counts_for_its_tenant_only(stub: cache_pb2_grpc.CacheStub) -> None:
    stored = await stub.Store(cache_pb2.StoreRequest(
        scope=scope(), prompt="How do I reset my password?", answer="Settings > Security"))
    with pytest.raises(grpc.aio.AioRpcError) as err:  # globex cannot judge acme's entry
        await stub.Audit(cache_pb2.AuditRequest(tenant="globex", entry_id=stored.entry_id,
                                                hit=True, same=False))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("entry_id:")
    wrong = cache_pb2.AuditRequest(tenant="acme", entry_id=stored.entry_id, hit=True,
                                   same=False)
    # 2 of 2 wrong: the 90 % interval's low end (0.22) is still under δ 0.25; 3 of 3 (0.37)
    # passes it, so the bound tightens and a fresh window starts.
    for _ in range(2):
        estimate = await stub.Audit(wrong)
    assert (estimate.verdicts, estimate.wrong, estimate.step) == (2, 2, 0)
    assert estimate.low == pytest.approx(0.05 ** 0.5) and estimate.low < 0.25
    estimate = await stub.Audit(wrong)
    assert (estimate.verdicts, estimate.step) == (0, 1)
    assert estimate.effective_delta == pytest.approx(0.125)
    near = await stub.Audit(cache_pb2.AuditRequest(tenant="acme", entry_id=stored.entry_id,
                                                   hit=False, same=True))
    assert (near.near_misses, near.near_misses_same) == (1, 1)
    stats = await stub.Stats(cache_pb2.StatsRequest(tenant="globex"))
    assert stats.audits[0].verdicts == 0 and stats.audits[0].step == 0


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cache.main", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def _wait_serving(address: str, timeout: float = 180.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "service never became ready"
            await asyncio.sleep(0.2)


async def test_hard_kill_keeps_every_durable_store(nats_server: NatsServer) -> None:
    """100 concurrent Stores, SIGKILL while some are in flight: every store that answered
    durable is served after a restart (each in its own namespace, so the lookup is exact)."""
    port = free_port()
    # A generous ack timeout: on a loaded machine a slow ack would honestly answer "not
    # durable", and this test is about what "durable" promises, not about speed.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CMESH_CACHE_NATS_URL": nats_server.url,
           "CMESH_CACHE_PORT": str(port), "CMESH_CACHE_PUBLISH_TIMEOUT_S": "15"}
    address = f"127.0.0.1:{port}"

    def scoped(i: int) -> cache_pb2.Scope:
        return cache_pb2.Scope(tenant="acme", sampling=GREEDY, policy=f"p{i}")

    proc = await _start(env)
    try:
        await _wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cache_pb2_grpc.CacheStub(channel)

            async def store(i: int) -> tuple[int, cache_pb2.StoreResponse]:
                return i, await stub.Store(cache_pb2.StoreRequest(
                    scope=scoped(i), prompt=f"What is item {i} of the list?", answer=f"A{i}"))

            calls = [asyncio.create_task(store(i)) for i in range(100)]
            answered: dict[int, cache_pb2.StoreResponse] = {}
            for next_done in asyncio.as_completed(calls):
                i, reply = await next_done
                answered[i] = reply
                if len(answered) == 60:  # kill with the other 40 in flight
                    break
            proc.send_signal(signal.SIGKILL)
            for late in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(late, tuple):
                    answered[late[0]] = late[1]
        await proc.wait()
        durable = {i: r.entry_id for i, r in answered.items() if r.stored and r.durable}
        assert len(durable) >= 60, "a store answered before the kill was not durable"
        proc = await _start(env)
        await _wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cache_pb2_grpc.CacheStub(channel)
            replies = await asyncio.gather(*(stub.Lookup(cache_pb2.LookupRequest(
                scope=scoped(i), prompt=f"What is item {i} of the list?")) for i in durable))
            for (i, entry_id), reply in zip(durable.items(), replies, strict=True):
                assert reply.hit and reply.entry.id == entry_id and reply.entry.answer == f"A{i}"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("mode", ["buffer", "refuse"])
async def test_store_with_nats_down_says_so(nats_server: NatsServer, embedder: Embedder,
                                            mode: str) -> None:
    settings = CacheSettings(nats_url=nats_server.url, port=0, delta=0.25,
                             when_log_unavailable=mode, publish_timeout_s=3.0)
    async with (CacheNode(settings, embedder, FeatureVerifier.load()) as node,
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel):
        stub = cache_pb2_grpc.CacheStub(channel)
        up = await stub.Store(cache_pb2.StoreRequest(scope=scope(), prompt="Who wrote Hamlet?",
                                                     answer="Shakespeare"))
        assert up.stored and up.durable
        await nats_server.stop()
        request = cache_pb2.StoreRequest(scope=scope(), prompt="How far is the Moon?",
                                         answer="About 384,000 km")
        invalidate = cache_pb2.InvalidateRequest(tenant="acme", entry_id=up.entry_id)
        if mode == "refuse":
            for call, message in ((stub.Store, request), (stub.Invalidate, invalidate)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(message)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        else:
            down = await stub.Store(request)
            assert down.stored and not down.durable and "not durable" in down.reason
            gone = await stub.Invalidate(invalidate)
            assert gone.removed == 1 and not gone.durable
            stats = await stub.Stats(cache_pb2.StatsRequest())
            assert stats.degraded and stats.pending_writes == 2
            sample = node.registry.get_sample_value
            assert sample("cache_log_not_durable_writes_total") == 2
            assert sample("cache_log_pending_writes") == 2
        await nats_server.start()
        assert node.log is not None and await node.log.drained(20)
        assert await node.log.wait_connected(20)
        again = await stub.Store(cache_pb2.StoreRequest(scope=scope(), prompt="What is 2+2?",
                                                        answer="4"))
        assert again.durable
