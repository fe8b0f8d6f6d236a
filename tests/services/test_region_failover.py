"""Tier queues per region and failover between them, on a real NATS supercluster.

Two regions of one nats-server each, joined by gateways; in each a real broker
process over its own scripted backend (the backend's real gRPC servicer, no
vLLM: these tests kill backends mid-answer and need exact text). The gateway
(`GatewayNode`, in this process) lives in region a with b as its failover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from core.generation import GenerationRequest, Sampling
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.broker.beacons import TierWatch
from services.broker.client import BrokerClient
from services.common.natsd import free_port
from services.common.regions import Supercluster
from services.common.server import GrpcService
from services.gateway.auth import add_key
from services.gateway.broker_tier import BrokerTier
from services.gateway.domain import TierCall
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.broker.conftest import ScriptedEngine, scripted_service, until
from tests.support import ServiceProcess, start_service

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]
REGIONS = ("a", "b")


@dataclass
class Region:
    name: str
    port: int  # the backend's, kept so it can come back where the broker looks
    backend: GrpcService
    engine: ScriptedEngine
    broker: ServiceProcess

    async def kill_backend(self) -> None:
        await self.backend.drain()  # grace 0: its calls are cut, like a SIGKILL

    async def restart_backend(self, delay_s: float) -> None:
        self.backend, self.engine = await scripted_service(self.port, delay_s)


@pytest.fixture
async def regions() -> AsyncIterator[tuple[Supercluster, dict[str, Region]]]:
    """Region a's backend answers a word per 50 ms, b's per 20 ms (4 slots each)."""
    async with Supercluster(REGIONS) as sc:
        made: dict[str, Region] = {}
        try:
            for name, delay in (("a", 0.05), ("b", 0.02)):
                port = free_port()
                backend, engine = await scripted_service(port, delay)
                broker = start_service(
                    "services.broker", "--backends", f"small={backend.address}",
                    "--nats_url", sc.url(name), "--region", name, "--load_poll_s", "0.05")
                made[name] = Region(name, port, backend, engine, broker)
            for region in made.values():
                await asyncio.to_thread(region.broker.wait_serving, 60)
            yield sc, made
        finally:
            for region in made.values():
                region.broker.stop(timeout=20)
                await region.backend.drain()


@pytest.fixture
async def watched(regions: tuple[Supercluster, dict[str, Region]]
                  ) -> AsyncIterator[BrokerClient]:
    """A client on region a's server that hears both regions' beacons (once each is up)."""
    sc, _ = regions
    async with BrokerClient(sc.url("a"), tier_watch=TierWatch(dead_after_s=1.5),
                            stall_s=2.0) as client:
        watch = client.tier_watch
        assert watch is not None
        await until(lambda: all(watch.live_brokers("small", r) for r in REGIONS), 15,
                    "both regions' brokers beaconing")
        yield client


def words(n: int, start: int = 0) -> str:
    return "".join(f" w{i}" for i in range(start, n))


async def test_a_gateway_serves_in_its_region_fails_over_while_its_backends_are_down_and_comes_home(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient,
        tmp_path: Path) -> None:
    sc, made = regions
    keys = tmp_path / "api-keys"
    key = add_key(keys, "acme")
    settings = GatewaySettings(port=0, api_keys_file=keys, policy="cascade",
                               nats_url=sc.url("a"), region="a", failover_regions=["b"],
                               failover_wait_s=5.0, default_max_tokens=6)
    watch = watched.tier_watch
    assert watch is not None
    async with GatewayNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def ask(n: int) -> gateway_pb2.AskResponse:
            return await stub.Ask(gateway_pb2.AskRequest(
                prompt=f"Question {n}",
                policy=gateway_pb2.PolicyOverrides(force_tier="small", skip_cache=True)),
                metadata=(("authorization", f"Bearer {key}"),), timeout=30)

        await until(lambda: watch.problem("small", "a") is None, 10, "a up")
        home = await ask(1)
        assert home.text == words(6)
        assert (home.metadata.region, home.metadata.failover_reason) == ("a", "")

        await made["a"].kill_backend()
        await until(lambda: watch.problem("small", "a") is not None, 10, "a known down")
        away = await ask(2)
        assert away.text == words(6)
        assert away.metadata.region == "b"
        assert away.metadata.failover_reason.startswith("a: tier 'small' in region 'a': "
                                                        "no healthy backend replica")

        await made["a"].restart_backend(0.05)
        await until(lambda: watch.problem("small", "a") is None, 15, "a up again")
        back = await ask(3)
        assert (back.text, back.metadata.region, back.metadata.failover_reason) == (
            words(6), "a", "")


async def test_fifty_concurrent_jobs_fail_over_midway_and_none_is_lost_or_answered_twice(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient) -> None:
    """50 streams on region a's 4 slots (most still queued there), a's backend killed
    while they run: every stream ends with its whole answer exactly once, those cut
    midway going on in b after the words they had."""
    _, made = regions
    tier = BrokerTier("small", watched, regions=REGIONS, failover_wait_s=30.0)
    n_tokens = 12
    regions_seen: dict[int, list[str]] = {}

    async def one(i: int) -> str:
        call = TierCall(GenerationRequest(prompt=f"job {i}",
                                          sampling=Sampling(max_tokens=n_tokens),
                                          request_id=f"fifty-{i}"), tenant=f"t{i % 5}",
                        timeout_s=120)
        text = []
        async for delta in tier.generate(call):
            if delta.region:
                regions_seen.setdefault(i, []).append(delta.region)
            text.append(delta.text)
        return "".join(text)

    jobs = [asyncio.create_task(one(i)) for i in range(50)]
    await until(lambda: made["a"].engine.running == 4, 20, "a's slots busy")
    await asyncio.sleep(0.2)  # a few words into the first answers
    started_in_a = len(made["a"].engine.started)
    await made["a"].kill_backend()
    killed = time.monotonic()
    texts = await asyncio.wait_for(asyncio.gather(*jobs), 120)
    took = time.monotonic() - killed

    assert texts == [words(n_tokens)] * 50  # whole, in order, nothing repeated or missing
    moved = [i for i, seen in regions_seen.items() if seen[-1] == "b"]
    midway = [i for i in moved if regions_seen[i][0] == "a"]
    assert len(moved) >= 40, regions_seen  # a ran 4 at a time, then had no backend
    assert midway, regions_seen  # at least the ones running when a's backend died
    assert started_in_a >= 4
    # b's backend ran each moved job once (continuations start after the words had).
    assert sorted(made["b"].engine.started) == sorted(f"job {i}" for i in moved)
    print(f"\n50 jobs: {len(moved)} moved to b ({len(midway)} midway), all done "
          f"{took:.1f} s after a's backend died")
