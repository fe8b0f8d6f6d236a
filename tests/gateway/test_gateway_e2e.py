"""The gateway through the real mesh: nats-server, cache, classifier, two vLLM backends.

Each test uses prompts of its own, so the shared cache only matters where a
test means it to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.natsd import NatsServer
from services.gateway.main import GatewayNode
from services.gateway.tier_health import tier_health_name
from tests.gateway.conftest import Mesh, metric_or_zero
from tests.support import ServiceProcess, start_service

pytestmark = [pytest.mark.vllm, pytest.mark.nats]

EASY = "What is the capital of France?"
# Scores about 0.85 with the shipped length backbone, above its route.large (0.79).
HARD = ("Let f(x) = x^3 - 6x^2 + 11x - 6. Find all real roots of f, then compute the "
        "integral of f from 1 to 3 and explain each step.")


@pytest.fixture
async def stub(gateway: GatewayNode) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def policy(**kw: object) -> gateway_pb2.PolicyOverrides:
    thresholds = kw.pop("thresholds", None)
    msg = gateway_pb2.PolicyOverrides(**kw)  # type: ignore[arg-type]
    if thresholds:
        s = struct_pb2.Struct()
        s.update(thresholds)  # type: ignore[arg-type]
        msg.thresholds.CopyFrom(s)
    return msg


async def expire_and_see_the_backend_stop(stub: gateway_pb2_grpc.GatewayStub, mesh: Mesh,
                                         backend: ServiceProcess,
                                         request: gateway_pb2.AskRequest) -> None:
    """Ask with a 1.5 s deadline: DEADLINE_EXCEEDED, then `backend` ends the request (it is
    counted as finished) and runs nothing within 15 s."""
    before = metric_or_zero(backend, "backend_requests_total")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Ask(request, metadata=auth(mesh.key), timeout=1.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    give_up = time.monotonic() + 15
    while (backend.metric("backend_engine_unfinished_requests") > 0
           or metric_or_zero(backend, "backend_requests_total") == before):
        assert time.monotonic() < give_up, "the backend kept generating"
        await asyncio.sleep(0.2)


async def test_answer_then_hit_without_backend_work_then_other_tenant_misses(
        stub, mesh: Mesh) -> None:
    first = await stub.Ask(gateway_pb2.AskRequest(prompt=EASY), metadata=auth(mesh.key))
    assert "Paris" in first.text and first.metadata.cache_status == "miss"
    assert first.metadata.usage.completion_tokens > 0 and first.metadata.cost > 0
    await asyncio.sleep(0.5)  # the store follows the answer
    before = mesh.backend_requests()
    chunks = [c async for c in stub.AskStream(gateway_pb2.AskRequest(prompt=EASY),
                                              metadata=auth(mesh.key))]
    meta = chunks[-1].metadata
    assert meta.cache_hit and meta.cache_status == "hit" and meta.cost == 0
    assert meta.cache_similarity > 0.99 and meta.cache_verifier_probability > 0.5
    assert meta.saving > 0
    assert "".join(c.text_delta for c in chunks[:-1]) == first.text
    assert mesh.backend_requests() == before
    other = await stub.Ask(gateway_pb2.AskRequest(prompt=EASY), metadata=auth(mesh.other_key))
    assert other.metadata.cache_status == "miss"
    assert mesh.backend_requests() == before + 1


async def test_easy_and_hard_route_apart_overrides_move_them_and_force_tier(
        stub, mesh: Mesh) -> None:
    key = auth(mesh.key)

    async def tier(prompt: str, **kw: object) -> gateway_pb2.ResponseMetadata:
        reply = await stub.Ask(gateway_pb2.AskRequest(
            prompt=prompt, policy=policy(skip_cache=True, **kw)), metadata=key)
        return reply.metadata

    easy, hard = await tier(EASY), await tier(HARD)
    assert (easy.tier, hard.tier) == ("small", "large")
    assert easy.classifier_score < hard.classifier_score
    assert easy.classifier_status == hard.classifier_status == "scored"
    assert (await tier(HARD, thresholds={"route.large": 0.99})).tier == "small"
    # route.large 0: every score sends to large (the shipped length backbone scores a short
    # question near 0, far under any positive threshold)
    assert (await tier(EASY, thresholds={"route.large": 0.0})).tier == "large"
    forced = await tier(EASY, force_tier="large")
    assert forced.tier == "large" and forced.classifier_status == "skipped"


async def test_high_confidence_threshold_escalates_to_large(stub, mesh: Mesh) -> None:
    reply = await stub.Ask(gateway_pb2.AskRequest(
        prompt="Name three primary colours.",
        policy=policy(policy="cascade", skip_cache=True, thresholds={"cascade.small": 0.999})),
        metadata=auth(mesh.key))
    meta = reply.metadata
    assert list(meta.tiers_tried) == ["small", "large"] and meta.tier == "large"
    assert meta.policy == "cascade" and reply.text
    assert meta.saving < 0  # two tiers paid for one answer


async def test_same_follow_up_in_two_conversations_does_not_hit_across(
        stub, mesh: Mesh) -> None:
    def convo(city: str, country: str) -> common_pb2.Conversation:
        return common_pb2.Conversation(turns=[
            common_pb2.Turn(role=common_pb2.ROLE_USER, content=f"Tell me about {city}."),
            common_pb2.Turn(role=common_pb2.ROLE_ASSISTANT,
                            content=f"{city} is the capital of {country}.")])

    follow_up = "How many people live there?"
    key = auth(mesh.key)
    paris = await stub.Ask(gateway_pb2.AskRequest(prompt=follow_up,
                                                  conversation=convo("Paris", "France")),
                           metadata=key)
    await asyncio.sleep(0.5)
    rome = await stub.Ask(gateway_pb2.AskRequest(prompt=follow_up,
                                                 conversation=convo("Rome", "Italy")),
                          metadata=key)
    assert paris.metadata.cache_status == rome.metadata.cache_status == "miss"
    again = await stub.Ask(gateway_pb2.AskRequest(prompt=follow_up,
                                                  conversation=convo("Paris", "France")),
                           metadata=key)
    assert again.metadata.cache_status == "hit" and again.text == paris.text


async def test_eight_identical_concurrent_misses_cause_one_generation(
        stub, mesh: Mesh, gateway: GatewayNode) -> None:
    before = mesh.backend_requests()
    request = gateway_pb2.AskRequest(prompt="Describe the moon in one sentence.")
    replies = await asyncio.gather(*(stub.Ask(request, metadata=auth(mesh.key))
                                     for _ in range(8)))
    assert len({r.text for r in replies}) == 1
    assert sum(r.metadata.coalesced for r in replies) == 7
    assert len({r.metadata.request_id for r in replies}) == 8
    assert mesh.backend_requests() == before + 1


BAD = [
    (gateway_pb2.AskRequest(prompt=""), "prompt"),
    (gateway_pb2.AskRequest(prompt="x" * 9000), "prompt"),
    (gateway_pb2.AskRequest(prompt="hi", policy=policy(force_tier="huge")), "policy.force_tier"),
    (gateway_pb2.AskRequest(prompt="hi", policy=policy(policy="dice")), "policy.policy"),
    (gateway_pb2.AskRequest(prompt="hi", policy=policy(thresholds={"route.large": 1.2})),
     "policy.thresholds.route.large"),
    (gateway_pb2.AskRequest(prompt="hi", policy=policy(thresholds={"cascade.small": -0.1})),
     "policy.thresholds.cascade.small"),
    (gateway_pb2.AskRequest(prompt="hi", policy=policy(thresholds={"route.tiny": 0.5})),
     "policy.thresholds.route.tiny"),
    (gateway_pb2.AskRequest(prompt="hi", sampling=common_pb2.SamplingParams(temperature=-1)),
     "sampling.temperature"),
    (gateway_pb2.AskRequest(prompt="hi", sampling=common_pb2.SamplingParams(temperature=5)),
     "sampling.temperature"),  # vLLM's bound, refused before any side call
    (gateway_pb2.AskRequest(prompt="hi", sampling=common_pb2.SamplingParams(stop=[""])),
     "sampling.stop"),
    (gateway_pb2.AskRequest(prompt="hi", sampling=common_pb2.SamplingParams(top_p=0)),
     "sampling.top_p"),
    (gateway_pb2.AskRequest(prompt="hi", sampling=common_pb2.SamplingParams(max_tokens=5000)),
     "sampling.max_tokens"),
]


async def test_bad_input_and_bad_keys_get_the_right_code_and_the_stack_keeps_serving(
        stub, mesh: Mesh) -> None:
    before = mesh.backend_requests()
    for request, field in BAD:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Ask(request, metadata=auth(mesh.key))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert mesh.backend_requests() == before  # refused at the gateway: no backend call
    for metadata in ((), auth("cm_not-a-key"), (("authorization", mesh.key),)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Ask(gateway_pb2.AskRequest(prompt=EASY), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in err.value.details()
    reply = await stub.Ask(gateway_pb2.AskRequest(prompt="What is 2 + 2?"),
                           metadata=auth(mesh.key))
    assert reply.text and reply.metadata.tier


async def test_deadline_shorter_than_generation_cancels_the_backend_work(
        stub, mesh: Mesh) -> None:
    request = gateway_pb2.AskRequest(
        prompt="Write a long story about a lighthouse keeper and the sea.",
        sampling=common_pb2.SamplingParams(max_tokens=400), policy=policy(force_tier="small"))
    await expire_and_see_the_backend_stop(stub, mesh, mesh.small, request)


async def test_stopped_cache_still_answers_uncached(mesh: Mesh) -> None:
    own_cache = start_service("services.cache")
    try:
        own_cache.wait_serving(timeout=300)
        settings = mesh.settings(cache_address=own_cache.address, cache_timeout_ms=500)
        async with GatewayNode(settings) as node, \
                grpc.aio.insecure_channel(node.address) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            request = gateway_pb2.AskRequest(prompt="Name a planet with rings.")
            first = await stub.Ask(request, metadata=auth(mesh.key))
            assert first.metadata.cache_status == "miss"
            own_cache.stop()
            chunks = [c async for c in stub.AskStream(request, metadata=auth(mesh.key))]
            meta = chunks[-1].metadata
            assert meta.cache_status == "unavailable" and not meta.cache_hit
            assert "".join(c.text_delta for c in chunks[:-1]) == first.text
            assert node.metrics is not None
            failures = node.metrics.side_failures.labels("cache", "lookup")._value.get()
            assert failures >= 1
    finally:
        own_cache.stop()


async def test_one_trace_spans_every_service(mesh: Mesh) -> None:
    """The gateway runs as its own process here, so tracing is installed there (it is
    process-wide) and every service exports to the test's in-memory collector. Tiers go
    through the broker: the trace crosses NATS in the job's headers."""
    gateway = start_service(
        "services.gateway", "--api_keys_file", str(mesh.keys_file),
        "--nats_url", mesh.nats.url, "--cache_address", mesh.cache.address,
        "--classifier_address", mesh.classifier.address,
        "--otlp_endpoint", mesh.spans.endpoint, "--default_max_tokens", "8")
    try:
        gateway.wait_serving(timeout=120)
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            reply = await gateway_pb2_grpc.GatewayStub(channel).Ask(
                gateway_pb2.AskRequest(prompt="Name the largest ocean on Earth."),
                metadata=auth(mesh.key), timeout=120)
        assert reply.metadata.classifier_status == "scored"
        expected = {"gateway", "cache", "classifier", "broker", "backend"}
        give_up = time.monotonic() + 20
        while True:
            asks = [s for s in mesh.spans.spans if s.service == "gateway"
                    and s.name.endswith("Gateway/Ask")]
            found = mesh.spans.services_in_trace(asks[0].trace_id) if asks else set()
            if expected <= found or time.monotonic() > give_up:
                break
            await asyncio.sleep(0.25)
        assert len(asks) == 1
        assert expected <= found, f"trace has spans from {found}"
    finally:
        gateway.stop()


async def test_through_the_broker_answers_and_a_deadline_cancels_the_job(mesh: Mesh) -> None:
    """Tiers reached through the broker's JetStream queues instead of direct gRPC."""
    settings = mesh.settings(nats_url=mesh.nats.url, backend_addresses={})
    async with GatewayNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        assert await tier_health(channel) == {"small": "SERVING", "large": "SERVING"}
        before = mesh.backend_requests()
        reply = await stub.Ask(gateway_pb2.AskRequest(
            prompt="What is the boiling point of water in Celsius?",
            policy=policy(skip_cache=True)), metadata=auth(mesh.key))
        assert reply.text and reply.metadata.usage.completion_tokens > 0
        # The backend counts a request once its handler ends, which may be just after
        # the broker has relayed the last chunk (and the gateway answered).
        counted = time.monotonic() + 10
        while mesh.backend_requests() < before + 1 and time.monotonic() < counted:
            await asyncio.sleep(0.05)
        assert mesh.backend_requests() == before + 1
        request = gateway_pb2.AskRequest(
            prompt="Write a long poem about mountains and rivers.",
            sampling=common_pb2.SamplingParams(max_tokens=400),
            policy=policy(force_tier="large", skip_cache=True))
        await expire_and_see_the_backend_stop(stub, mesh, mesh.large, request)


async def tier_health(channel: grpc.aio.Channel, within_s: float = 5.0) -> dict[str, str]:
    """Each tier's status under the gateway's per-tier health names, once the first
    beacons had time to arrive (within_s)."""
    stub = health_pb2_grpc.HealthStub(channel)
    give_up = time.monotonic() + within_s
    while True:
        seen = {}
        for tier in ("small", "large"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(
                service=tier_health_name(tier)), timeout=5)
            seen[tier] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if set(seen.values()) == {"SERVING"} or time.monotonic() > give_up:
            return seen
        await asyncio.sleep(0.2)


async def test_a_tier_with_no_live_broker_is_refused_at_once_and_reported(
        mesh: Mesh) -> None:
    """Through a NATS with no broker on it: after the beacons' grace, every tier is
    NOT_SERVING in the gateway's health and a request is UNAVAILABLE naming its tier
    at once, not at its deadline."""
    async with NatsServer() as empty:
        settings = mesh.settings(nats_url=empty.url, backend_addresses={})
        async with GatewayNode(settings) as node, \
                grpc.aio.insecure_channel(node.address) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            await asyncio.sleep(settings.tier_dead_after_s + 0.6)
            assert await tier_health(channel, 0) == {"small": "NOT_SERVING",
                                                     "large": "NOT_SERVING"}
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Ask(gateway_pb2.AskRequest(prompt="Hello there?", policy=policy(
                    force_tier="small", skip_cache=True)), metadata=auth(mesh.key),
                    timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "'small'" in err.value.details() and "no live broker" in err.value.details()
            assert time.monotonic() - start < 1


async def test_dead_tier_is_unavailable_naming_it(mesh: Mesh) -> None:
    from services.common.natsd import free_port

    settings = mesh.settings(backend_addresses={"small": mesh.small.address,
                                                "large": f"127.0.0.1:{free_port()}"})
    async with GatewayNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Ask(gateway_pb2.AskRequest(prompt="Hello?", policy=policy(
                force_tier="large", skip_cache=True)), metadata=auth(mesh.key), timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "'large'" in err.value.details()
        reply = await stub.Ask(gateway_pb2.AskRequest(prompt="Hello?", policy=policy(
            force_tier="small", skip_cache=True)), metadata=auth(mesh.key), timeout=60)
        assert reply.metadata.tier == "small"  # the live tier still answers
