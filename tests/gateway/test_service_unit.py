"""The gateway's gRPC surface over real gRPC (port 0) with fake tiers: auth, rate limit,
status codes, streaming. The real-stack behaviour is in test_gateway_e2e.py."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.auth import add_key, load_keys
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "acme"), add_key(path, "limited")


@pytest.fixture(scope="module")
async def node(keys_file: tuple[Path, str, str]) -> AsyncIterator[GatewayNode]:
    tiers = {"small": FakeTier("small", 0.3), "large": FakeTier("large", 0.95)}
    settings = GatewaySettings(port=0, api_keys_file=keys_file[0], policy="cascade",
                               rate_limit_per_s=1, rate_limit_burst=30)
    async with GatewayNode(settings, tiers=tiers) as running:
        yield running


@pytest.fixture
async def stub(node: GatewayNode) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_keys_file_holds_hashes_only(keys_file: tuple[Path, str, str]) -> None:
    path, key, _ = keys_file
    assert key not in path.read_text()
    assert sorted(load_keys(path).values()) == ["acme", "limited"]


async def test_health_is_open_and_serving(node: GatewayNode) -> None:
    async with grpc.aio.insecure_channel(node.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="cascademesh.gateway.v1.Gateway"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer nope"),),
                                      (("authorization", "Basic abc"),)])
async def test_missing_or_unknown_key_is_unauthenticated(stub, metadata) -> None:
    for call in (stub.Ask, stub.AskStream):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            result = call(gateway_pb2.AskRequest(prompt="hi"), metadata=metadata)
            if hasattr(result, "__aiter__"):
                async for _ in result:
                    pass
            else:
                await result
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in err.value.details()


async def test_stream_escalates_and_ends_with_metadata(stub, keys_file) -> None:
    chunks = [c async for c in stub.AskStream(gateway_pb2.AskRequest(prompt="tell me"),
                                              metadata=auth(keys_file[1]))]
    *texts, last = chunks
    assert last.WhichOneof("kind") == "metadata"
    meta = last.metadata
    assert list(meta.tiers_tried) == ["small", "large"] and meta.tier == "large"
    assert "".join(c.text_delta for c in texts).startswith("large:")
    assert meta.cost > 0 and meta.usage.completion_tokens > 0 and meta.request_id


def struct(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


@pytest.mark.parametrize(("request_", "field"), [
    (gateway_pb2.AskRequest(prompt=""), "prompt"),
    (gateway_pb2.AskRequest(prompt="x" * 9000), "prompt"),
    (gateway_pb2.AskRequest(prompt="a", policy={"force_tier": "xl"}), "policy.force_tier"),
    (gateway_pb2.AskRequest(prompt="a", policy={"policy": "coin"}), "policy.policy"),
    (gateway_pb2.AskRequest(prompt="a", policy=gateway_pb2.PolicyOverrides(
        thresholds=struct(**{"cascade.small": 2.0}))), "policy.thresholds.cascade.small"),
    (gateway_pb2.AskRequest(prompt="a", policy=gateway_pb2.PolicyOverrides(
        thresholds=struct(**{"nope": 0.5}))), "policy.thresholds.nope"),
    (gateway_pb2.AskRequest(prompt="a", sampling=common_pb2.SamplingParams(top_p=1.5)),
     "sampling.top_p"),
    (gateway_pb2.AskRequest(prompt="a", sampling=common_pb2.SamplingParams(max_tokens=0)),
     "sampling.max_tokens"),
    (gateway_pb2.AskRequest(prompt="a", policy=gateway_pb2.PolicyOverrides(
        thresholds=struct(**{"cascade.small": math.nan}))), "policy.thresholds.cascade.small"),
    (gateway_pb2.AskRequest(prompt="a", policy=gateway_pb2.PolicyOverrides(
        thresholds=struct(**{"cascade.small": -math.inf}))), "policy.thresholds.cascade.small"),
    (gateway_pb2.AskRequest(prompt="a", sampling=common_pb2.SamplingParams(
        temperature=math.nan)), "sampling.temperature"),
    (gateway_pb2.AskRequest(prompt="a", conversation=common_pb2.Conversation(
        turns=[common_pb2.Turn(role=common_pb2.ROLE_USER)] * 300)), "conversation.turns"),
    (gateway_pb2.AskRequest(prompt="a", conversation=common_pb2.Conversation(
        turns=[common_pb2.Turn(role=common_pb2.ROLE_USER, content="x" * 150)] * 200)),
     "conversation"),  # 30,000 characters of text, plus 16 per turn: past 32,000
])
async def test_bad_input_is_invalid_argument_naming_the_field(stub, keys_file, request_,
                                                              field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Ask(request_, metadata=auth(keys_file[1]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":")


def undecodable_requests() -> list[tuple[bytes, str]]:
    """Serialized AskRequests protobuf cannot decode, and the field each one breaks."""
    bad_turn = gateway_pb2.AskRequest(prompt="hi", conversation=common_pb2.Conversation(
        turns=[common_pb2.Turn(content="ok"), common_pb2.Turn(content="@@")]))
    deep = struct_pb2.Value()
    inner = deep
    for _ in range(200):
        inner = inner.struct_value.fields["a"]
    deep_request = gateway_pb2.AskRequest(prompt="hi")
    deep_request.policy.thresholds.fields["route.large"].CopyFrom(deep)
    return [
        (b"\x0a\x02\xff\xfe", "prompt"),  # field 1 (prompt), 2 bytes that are not UTF-8
        (bad_turn.SerializeToString().replace(b"@@", b"\xc3\x28"),
         "conversation.turns[1].content"),
        (deep_request.SerializeToString(), "policy.thresholds"),
    ]


@pytest.mark.parametrize(("data", "field"), undecodable_requests())
async def test_undecodable_bytes_are_invalid_argument_naming_the_field(
        node: GatewayNode, keys_file, data: bytes, field: str) -> None:
    async with grpc.aio.insecure_channel(node.address) as channel:
        for method, streaming in (("Ask", False), ("AskStream", True)):
            path = f"/cascademesh.gateway.v1.Gateway/{method}"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                if streaming:
                    async for _ in channel.unary_stream(path)(data, metadata=auth(keys_file[1])):
                        pass
                else:
                    await channel.unary_unary(path)(data, metadata=auth(keys_file[1]))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert err.value.details().startswith(field + ":"), err.value.details()
            assert dict(err.value.trailing_metadata())["cmesh-field"] == field


async def test_rate_limit_is_resource_exhausted_with_retry_after(stub, keys_file) -> None:
    key = keys_file[2]
    codes = []
    for _ in range(40):
        try:
            await stub.Ask(gateway_pb2.AskRequest(prompt="ok", policy={"skip_cache": True}),
                           metadata=auth(key))
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            codes.append(err.code())
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                trailers = dict(err.trailing_metadata() or ())
                assert int(trailers["retry-after-ms"]) > 0
    assert codes.count(grpc.StatusCode.OK) >= 29
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    # Another tenant is not limited by this one's burst.
    reply = await stub.Ask(gateway_pb2.AskRequest(prompt="ok"), metadata=auth(keys_file[1]))
    assert reply.text


async def test_metrics_count_outcomes_escalations_cost_and_refusals(node: GatewayNode) -> None:
    value = node.registry.get_sample_value
    assert value("gateway_requests_total", {"tier": "large", "outcome": "escalated"}) >= 1
    assert value("gateway_escalations_total") >= 1
    assert value("gateway_cost_total") > 0
    assert value("gateway_errors_total", {"code": "UNAUTHENTICATED"}) >= 1
    assert value("gateway_errors_total", {"code": "INVALID_ARGUMENT"}) >= 1
    assert value("gateway_errors_total", {"code": "RESOURCE_EXHAUSTED"}) >= 1
    assert value("gateway_stage_seconds_count", {"stage": "total"}) >= 1
