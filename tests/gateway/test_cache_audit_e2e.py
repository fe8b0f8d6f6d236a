"""The cache audit end to end: the gateway judges a share of hits, the real cache service
keeps each tenant's live wrong-hit estimate and tightens that tenant's bound past δ.

Real cache service (MiniLM, the shipped verifier and table; its own process, gRPC),
the gateway in-process over real gRPC, tiers scripted: the judge tier calls one acme
hit in three a different question and every globex hit the same one: a stream where
the shipped bound lets through more wrong hits than δ. The unit tests state the
count (six audited hits at 1 in 3 to tighten); here it is the real path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from cmesh.commands.gateway import audit_line
from core.generation import Delta
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.auth import add_key
from services.gateway.domain import TierCall
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier
from tests.support import ServiceProcess, serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
QUESTION = "What is the capital of France?"
DELTA = 0.02  # the cache service's default δ


@dataclass
class ScriptedJudge:
    """A tier that answers the audit's yes/no question with each tenant's script, in turn."""

    says_same: dict[str, list[bool]]
    asked: dict[str, int] = field(default_factory=dict)

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        assert "Request A:" in call.request.prompt and call.batch
        script = self.says_same[call.tenant]
        turn = self.asked.get(call.tenant, 0)
        self.asked[call.tenant] = turn + 1
        verdict = script[turn % len(script)]
        yield Delta("yes" if verdict else "no")
        yield Delta(finish_reason="stop", prompt_tokens=30, completion_tokens=1)


@pytest.fixture(scope="module")
def cache_service() -> Iterator[ServiceProcess]:
    with serving("services.cache", "--audit_min_verdicts", "5") as service:
        yield service


async def audits(cache: ServiceProcess, tenant: str) -> cache_pb2.AuditEstimate:
    async with grpc.aio.insecure_channel(cache.address) as channel:
        stats = await cache_pb2_grpc.CacheStub(channel).Stats(
            cache_pb2.StatsRequest(tenant=tenant), timeout=5)
    return stats.audits[0]


async def settled(cache: ServiceProcess, tenant: str,
                  done: Callable[[cache_pb2.AuditEstimate], bool],
                  within: float = 20.0) -> cache_pb2.AuditEstimate:
    """The tenant's estimate once `done` holds (audits run after the answer went out)."""
    deadline = time.monotonic() + within
    while not done(estimate := await audits(cache, tenant)):
        if time.monotonic() > deadline:
            pytest.fail(f"{tenant}'s audit estimate did not settle: {estimate}")
        await asyncio.sleep(0.05)
    return estimate


async def test_a_tenant_whose_audited_hits_are_wrong_gets_a_tighter_bound_alone(
        tmp_path: Path, cache_service: ServiceProcess) -> None:
    keys_file = tmp_path / "api-keys"
    keys = {t: add_key(keys_file, t) for t in ("acme", "globex")}
    # acme: one audited hit in three is a different question (wrong share 1/3, far past δ)
    judge = ScriptedJudge({"acme": [True, True, False], "globex": [True]})
    settings = GatewaySettings(port=0, api_keys_file=keys_file, policy="cascade",
                               cache_address=cache_service.address, audit_share=1.0,
                               audit_judge_tier="large", rate_limit_per_s=1000,
                               rate_limit_burst=1000)
    tiers = {"small": FakeTier("small", 0.99), "large": judge}
    async with GatewayNode(settings, tiers=tiers) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def ask(tenant: str) -> gateway_pb2.AskResponse:
            return await stub.Ask(gateway_pb2.AskRequest(
                prompt=QUESTION, policy=gateway_pb2.PolicyOverrides(force_tier="small")),
                metadata=(("authorization", f"Bearer {keys[tenant]}"),), timeout=30)

        shipped = {}
        for tenant in keys:
            await ask(tenant)  # a miss: the small tier answers and the answer is stored
            shipped[tenant] = (await audits(cache_service, tenant)).threshold
        hits = {"acme": 0, "globex": 0}
        for _ in range(12):
            for tenant in keys:
                reply = await ask(tenant)
                hits[tenant] += reply.metadata.cache_status == "hit"
        assert hits["acme"] >= 6 and hits["globex"] >= 6, hits

        globex = await settled(cache_service, "globex", lambda e: e.verdicts >= hits["globex"])
        acme = await settled(cache_service, "acme", lambda e: e.step >= 1)
        assert acme.effective_delta < DELTA
        assert acme.threshold > shipped["acme"]
        assert globex.step == 0 and globex.threshold == shipped["globex"]
        assert globex.verdicts >= 6 and globex.wrong == 0
        assert judge.asked["acme"] >= 6
    line = audit_line(cache_service.metrics_port)  # what `cmesh status` shows for the cache
    assert "acme wrong" in line and "globex wrong 0.000" in line and "δ 0.02" in line, line
