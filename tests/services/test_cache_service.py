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


async def test_killed_service_loses_no_entry(nats_server: NatsServer) -> None:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CMESH_CACHE_NATS_URL": nats_server.url,
           "CMESH_CACHE_PORT": str(port)}
    address = f"127.0.0.1:{port}"
    prompts = ["What is the capital of France?", "How do I reset my password?",
               "How many legs does a spider have?"]
    proc = await _start(env)
    try:
        await _wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cache_pb2_grpc.CacheStub(channel)
            for p in prompts:
                assert (await stub.Store(cache_pb2.StoreRequest(scope=scope(), prompt=p,
                                                                answer="A: " + p))).stored
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        proc = await _start(env)
        await _wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cache_pb2_grpc.CacheStub(channel)
            for p in prompts:
                reply = await stub.Lookup(cache_pb2.LookupRequest(scope=scope(), prompt=p))
                assert reply.hit and reply.entry.answer == "A: " + p
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
