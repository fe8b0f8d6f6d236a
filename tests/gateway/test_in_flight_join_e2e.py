"""A paraphrase that arrives while its question is still being answered shares that
answer as it streams, instead of generating it a second time.

Real cache service (MiniLM, the shipped verifier and table, its own process, gRPC),
the gateway in-process over real gRPC, the tier scripted and slow (it echoes the
prompt it was given, a word every 0.25 s) so every answer is still in flight when
the next question comes, and the text says whose prompt was answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier
from tests.support import ServiceProcess, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ASKED = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"
SUM = "what is 2+3"
LOOK_ALIKE = "what is 2+2"


@pytest.fixture(scope="module")
def cache_service() -> Iterator[ServiceProcess]:
    # δ 0.15: where the shipped table certifies paraphrase hits (tests/cache/conftest.py)
    with serving("services.cache", "--delta", "0.15") as service:
        yield service


async def answer(stub: gateway_pb2_grpc.GatewayStub, key: str, prompt: str,
                 first: asyncio.Event | None = None) -> tuple[str, gateway_pb2.ResponseMetadata]:
    request = gateway_pb2.AskRequest(prompt=prompt, policy=gateway_pb2.PolicyOverrides(
        force_tier="small"))
    text, meta = [], None
    async for chunk in stub.AskStream(request, metadata=(("authorization", f"Bearer {key}"),),
                                      timeout=60):
        if chunk.HasField("metadata"):
            meta = chunk.metadata
        else:
            text.append(chunk.text_delta)
            if first is not None:
                first.set()
    assert meta is not None
    return "".join(text), meta


async def asked_while_in_flight(node: GatewayNode, key: str,
                                first: list[str], then: list[str]
                                ) -> list[tuple[str, gateway_pb2.ResponseMetadata]]:
    """Ask `first`, and once each streams, ask `then`; every answer, in that order."""
    async with grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        started = [asyncio.Event() for _ in first]
        leading = [asyncio.create_task(answer(stub, key, p, e))
                   for p, e in zip(first, started, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        following = [asyncio.create_task(answer(stub, key, p)) for p in then]
        return list(await asyncio.gather(*leading, *following))


def node_settings(keys_file: Path, cache: ServiceProcess, **overrides: object) -> GatewaySettings:
    return GatewaySettings(port=0, api_keys_file=keys_file, cache_address=cache.address,
                           rate_limit_per_s=1000, rate_limit_burst=1000,
                           cache_timeout_ms=10_000, **overrides)  # type: ignore[arg-type]


async def test_a_paraphrase_follows_the_answer_in_flight_and_a_look_alike_does_not(
        tmp_path: Path, cache_service: ServiceProcess) -> None:
    keys_file = tmp_path / "api-keys"
    key = add_key(keys_file, "acme")
    small = FakeTier("small", delay=0.25)
    tiers = {"small": small, "large": FakeTier("large")}
    async with GatewayNode(node_settings(keys_file, cache_service), tiers=tiers) as node:
        (asked, asked_meta), (_, _), (shared, shared_meta), (alike, alike_meta) = \
            await asked_while_in_flight(node, key, [ASKED, SUM], [PARAPHRASE, LOOK_ALIKE])

    assert asked == f"small: {ASKED} " and asked_meta.cache_status == "miss"
    assert shared == asked  # the first asking's answer, word for word
    assert shared_meta.cache_status == "hit" and shared_meta.cost == 0
    assert "in flight" in shared_meta.cache_store_reason
    assert shared_meta.cache_verifier_probability > 0.5 and shared_meta.tier == "small"
    assert alike == f"small: {LOOK_ALIKE} " and alike_meta.cache_status == "miss"
    assert small.calls == 3  # the paraphrase generated nothing of its own


async def test_with_the_setting_off_the_paraphrase_is_generated_again(
        tmp_path: Path, cache_service: ServiceProcess) -> None:
    keys_file = tmp_path / "api-keys"
    key = add_key(keys_file, "initech")  # a tenant of its own: nothing stored yet
    small = FakeTier("small", delay=0.25)
    settings = node_settings(keys_file, cache_service, cache_join_in_flight=False)
    async with GatewayNode(settings, tiers={"small": small, "large": FakeTier("large")}) as node:
        (asked, _), (again, meta) = await asked_while_in_flight(node, key, [ASKED],
                                                               [PARAPHRASE])

    assert asked == f"small: {ASKED} "
    assert again == f"small: {PARAPHRASE} " and meta.cache_status == "miss"
    assert small.calls == 2
