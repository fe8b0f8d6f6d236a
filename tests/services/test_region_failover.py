"""Tier queues per region and failover between them, on a real NATS supercluster.

Two regions of one nats-server each, joined by gateways; in each a real broker
process over its own scripted backend (the backend's real gRPC servicer, no
vLLM: these tests kill backends mid-answer and need exact text). Gateways
(`GatewayNode`, in this process) live in a region with the other as their
failover; where the cache matters, each region has a real cache service (real
MiniLM and verifier) whose log sources the other region's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from cache.verifier import FeatureVerifier
from core.embedder import Embedder
from core.generation import GenerationRequest, Sampling
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.broker.beacons import TierWatch
from services.broker.client import BrokerClient
from services.cache.main import CacheNode
from services.cache.settings import CacheSettings
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
WORDS = 6  # the scripted backends' longest answer
LAG_BOUND_S = 10.0  # what a store through one region's gateway may take to hit in the other


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
        self.backend, self.engine = await scripted_service(self.port, delay_s, words=WORDS)


@pytest.fixture
async def regions() -> AsyncIterator[tuple[Supercluster, dict[str, Region]]]:
    """Region a's backend answers a word per 50 ms, b's per 20 ms (4 slots each), at
    most 6 words (a shorter answer ends "stop", so it may be cached)."""
    async with Supercluster(REGIONS) as sc:
        made: dict[str, Region] = {}
        try:
            for name, delay in (("a", 0.05), ("b", 0.02)):
                port = free_port()
                backend, engine = await scripted_service(port, delay, words=WORDS)
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


@asynccontextmanager
async def gateway_in(sc: Supercluster, region: str, keys: Path, **settings: object
                     ) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    """A gateway in `region` failing over to the other region, on its region's server."""
    other = [r for r in REGIONS if r != region]
    values: dict[str, object] = {
        "port": 0, "api_keys_file": keys, "policy": "cascade", "nats_url": sc.url(region),
        "region": region, "failover_regions": other, "failover_wait_s": 5.0,
        "default_max_tokens": 8, **settings}
    async with GatewayNode(GatewaySettings(**values)) as node, \
            grpc.aio.insecure_channel(node.address) as channel:  # type: ignore[arg-type]
        yield gateway_pb2_grpc.GatewayStub(channel)


async def ask(stub: gateway_pb2_grpc.GatewayStub, key: str, prompt: str,
              timeout: float = 30, skip_cache: bool = True, no_store: bool = False
              ) -> gateway_pb2.AskResponse:
    return await stub.Ask(gateway_pb2.AskRequest(
        prompt=prompt, policy=gateway_pb2.PolicyOverrides(
            force_tier="small", skip_cache=skip_cache, no_store=no_store)),
        metadata=(("authorization", f"Bearer {key}"),), timeout=timeout)


async def test_a_gateway_serves_in_its_region_fails_over_while_its_backends_are_down_and_comes_home(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient,
        tmp_path: Path) -> None:
    sc, made = regions
    keys = tmp_path / "api-keys"
    key = add_key(keys, "acme")
    watch = watched.tier_watch
    assert watch is not None
    async with gateway_in(sc, "a", keys) as stub:
        home = await ask(stub, key, "Question 1")
        assert home.text == words(WORDS)
        assert (home.metadata.region, home.metadata.failover_reason) == ("a", "")

        await made["a"].kill_backend()
        await until(lambda: watch.problem("small", "a") is not None, 10, "a known down")
        away = await ask(stub, key, "Question 2")
        assert away.text == words(WORDS)
        assert away.metadata.region == "b"
        assert away.metadata.failover_reason.startswith("a: tier 'small' in region 'a': "
                                                        "no healthy backend replica")

        await made["a"].restart_backend(0.05)
        await until(lambda: watch.problem("small", "a") is None, 15, "a up again")
        back = await ask(stub, key, "Question 3")
        assert (back.text, back.metadata.region, back.metadata.failover_reason) == (
            words(WORDS), "a", "")


async def test_with_a_regions_nats_killed_the_other_serves_and_its_gateway_never_hangs(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient,
        tmp_path: Path) -> None:
    """a's whole NATS cluster SIGKILLed: b's gateway goes on serving in b; a's gateway
    (connected to a's servers only) answers each request with UNAVAILABLE within its
    deadline; a's servers back, a's gateway serves in a again with no restart."""
    sc, _ = regions
    keys = tmp_path / "api-keys"
    key = add_key(keys, "acme")
    async with gateway_in(sc, "a", keys) as gw_a, gateway_in(sc, "b", keys) as gw_b:
        assert (await ask(gw_a, key, "before")).metadata.region == "a"
        await sc.stop("a")
        ends = []
        for n in range(2):
            served = await ask(gw_b, key, f"b during {n}")
            assert (served.text, served.metadata.region) == (words(WORDS), "b")
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ask(gw_a, key, f"a during {n}", timeout=20)
            ends.append((refused.value.code(), time.monotonic() - t0))
        assert all(code == grpc.StatusCode.UNAVAILABLE and took < 20
                   for code, took in ends), ends

        await sc.start("a")
        t0 = time.monotonic()
        while True:  # the gateway's and the broker's connections come back by themselves
            try:
                back = await ask(gw_a, key, "after", timeout=20)
                break
            except grpc.aio.AioRpcError:
                assert time.monotonic() - t0 < 60, "a's gateway does not serve again"
                await asyncio.sleep(0.5)
        assert (back.text, back.metadata.region) == (words(WORDS), "a")
        print(f"\na's gateway refused in {[f'{t:.1f}' for _, t in ends]} s while a was down; "
              f"served in a again {time.monotonic() - t0:.1f} s after a's servers started")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


async def test_an_answer_stored_through_one_regions_gateway_hits_through_the_others(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient,
        embedder: Embedder, tmp_path: Path) -> None:
    """A cache per region, each log sourcing the other's: an answer made through a's
    gateway is a hit through b's within LAG_BOUND_S; another tenant misses in both."""
    sc, _ = regions
    keys = tmp_path / "api-keys"
    key, other_key = add_key(keys, "acme"), add_key(keys, "globex")
    async with contextlib.AsyncExitStack() as stack:
        gateways = {}
        for region in REGIONS:
            peers = [r for r in REGIONS if r != region]
            cache = await stack.enter_async_context(CacheNode(
                CacheSettings(nats_url=sc.url(region), region=region, peer_regions=peers,
                              port=0, publish_timeout_s=3.0),
                embedder, FeatureVerifier.load()))
            gateways[region] = await stack.enter_async_context(gateway_in(
                sc, region, keys, cache_address=f"127.0.0.1:{cache.port}",
                cache_timeout_ms=5000, store_timeout_ms=5000))
        prompt = "What is the capital of Portugal?"
        made_in_a = await ask(gateways["a"], key, prompt, skip_cache=False)
        assert made_in_a.metadata.cache_status == "miss" and made_in_a.metadata.cache_stored
        t0 = time.monotonic()
        while True:
            in_b = await ask(gateways["b"], key, prompt, skip_cache=False)
            if in_b.metadata.cache_status == "hit":
                break
            assert time.monotonic() - t0 < LAG_BOUND_S, "no hit in b"
            await asyncio.sleep(0.05)
        lag = time.monotonic() - t0
        assert in_b.text == made_in_a.text == words(WORDS)
        for region in REGIONS:
            stranger = await ask(gateways[region], other_key, prompt, skip_cache=False,
                                 no_store=True)  # its own answer must not hit next
            assert stranger.metadata.cache_status == "miss", region
        print(f"\nstored through a, hit through b {lag * 1000:.0f} ms later")


async def test_fifty_concurrent_jobs_fail_over_midway_and_none_is_lost_or_answered_twice(
        regions: tuple[Supercluster, dict[str, Region]], watched: BrokerClient) -> None:
    """50 streams on region a's 4 slots (most still queued there), a's backend killed
    while they run: every stream ends with its whole answer exactly once, those cut
    midway going on in b after the words they had."""
    _, made = regions
    tier = BrokerTier("small", watched, regions=REGIONS, failover_wait_s=30.0)
    n_tokens = WORDS
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
