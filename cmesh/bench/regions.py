"""`cmesh bench regions`: failover between two regions' tier queues, and the cache's
replication lag between them, on one machine.

Two regions of one nats-server each, joined as a supercluster; in each a SmolLM2
backend and a broker serving that region's queue of tier `small` on it (and of
tier `same` on a's backend, so that served-here and served-there differ by the
path between the regions only, not by which engine ran); a cache
service per region (in this process: real MiniLM and verifier) whose log
sources the other's. The client sits on region a's server, as a's gateway does,
and sends jobs through the gateway's own `BrokerTier`.

- `failover_ttft_added_ms`: TTFT p50 of a job served by region b minus one
  served in a, one job at a time, fresh prompts, rounds A-B-B-A
  (`cmesh.bench.fair`).
- `failover_detect_ms`: from SIGKILL of a's backend (its whole process group,
  engine core included) to the first token of a job served by b, while jobs
  keep coming (two at a time); `failback_ms`: from a's backend serving again
  to the first job served in a again (jobs one at a time: on two cores a vLLM
  engine starting beside a busy one takes minutes, so the stream stops while a's
  backend restarts). One trial per run (--quick) or three.
- `replication_lag_p50_ms` / `_p99_ms`: from a Store acknowledged by a's cache
  to the first hit for that prompt in b's, polled every 5 ms.

On one machine these figures exclude the network between regions. An
operator adds, per direction crossed, the one-way latency between the regions'
NATS gateways: a job served by another region crosses twice (the job there,
its tokens back), so TTFT added ≈ `failover_ttft_added_ms` + RTT; a cache event
crosses once, so lag ≈ `replication_lag_*` + RTT / 2; detection is bound by
the broker's `down_after_s` and beacons, plus RTT / 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cmesh import terminate
from cmesh.bench.fair import Sample, compare, percentile
from cmesh.output import console, emit

REGIONS = ("a", "b")
_POLL_S = 0.005


def _specs(sc: Any) -> list[Any]:
    from cmesh.stack import ServiceSpec

    backend_args = ("--served_name", "small", "--max_num_seqs", "8", "--kv_cache_gib", "1",
                    "--drain_seconds", "0")
    specs = [ServiceSpec(f"backend-{r}", "services.backend", backend_args) for r in REGIONS]
    for region in REGIONS:
        specs.append(ServiceSpec(
            f"broker-{region}", "services.broker",
            ("--backends", f"small={{backend-{region}}};same={{backend-a}}", "--nats_url",
             sc.url(region), "--region", region, "--load_poll_s", "0.05",
             "--down_after_s", "0.5"),
            needs=tuple(f"backend-{r}" for r in REGIONS)))
    return specs


async def _first_token(tier: Any, prompt: str, max_tokens: int = 8) -> tuple[float, str]:
    """(seconds to the first text, region that served it) of one job, read to its end."""
    from core.generation import GenerationRequest, Sampling
    from services.gateway.domain import TierCall

    call = TierCall(GenerationRequest(prompt=prompt, sampling=Sampling(max_tokens=max_tokens),
                                      request_id=uuid.uuid4().hex), tenant="bench",
                    timeout_s=120)
    start = time.perf_counter()
    first, region = None, ""
    async for delta in tier.generate(call):
        region = delta.region or region
        if first is None and delta.text:
            first = time.perf_counter() - start
    return (first if first is not None else time.perf_counter() - start), region


async def _ttft(client: Any, quick: bool) -> dict[str, float]:
    from services.gateway.broker_tier import BrokerTier

    # Tier `same` runs on a's backend in both regions: the sides differ by the path only.
    tiers = {"local": BrokerTier("same", client, ["a"]),
             "remote": BrokerTier("same", client, ["b"])}
    per_round = 4 if quick else 10
    count = iter(range(1_000_000))

    def side(name: str) -> Any:
        async def run(round_: int) -> Sample:
            latencies = []
            start = time.perf_counter()
            for _ in range(per_round):
                seconds, _region = await _first_token(
                    tiers[name], f"Write one sentence about item {next(count)} of a list.")
                latencies.append(seconds)
            return Sample(len(latencies), time.perf_counter() - start, latencies)
        return run

    sides = await compare({n: side(n) for n in tiers}, rounds=2 if quick else 4,
                          report=console.print)
    local, remote = sides["local"].latency_p50, sides["remote"].latency_p50
    return {"ttft_local_p50_ms": local * 1000, "ttft_other_region_p50_ms": remote * 1000,
            "failover_ttft_added_ms": (remote - local) * 1000,
            "ttft_jobs_per_side": float(sum(len(s.latencies) for s in sides["local"].samples))}


async def _until(check: Any, within_s: float, failure: str) -> None:
    end = time.perf_counter() + within_s
    while not check():
        if time.perf_counter() > end:
            raise RuntimeError(failure)
        await asyncio.sleep(0.01)


async def _keep_asking(tier: Any, lane: str, served: list[tuple[float, str]],
                       stop: asyncio.Event) -> None:
    """Jobs one after another until `stop`: (first token at, region) of each served."""
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.perf_counter()
        try:
            seconds, region = await _first_token(tier, f"Name a colour ({lane}.{n}).",
                                                 max_tokens=4)
            served.append((t0 + seconds, region))
        except Exception:  # refused (every region down for a moment): not counted
            await asyncio.sleep(0.05)


async def _failover(stack: Any, client: Any, trials: int) -> dict[str, float]:
    """Kill a's backend under a stream of jobs; time until b serves, and until a again."""
    from services.gateway.broker_tier import BrokerTier

    tier = BrokerTier("small", client, list(REGIONS))
    detect, back = [], []
    for trial in range(trials):
        took, returned = await _one_failover(stack, tier, trial)
        detect.append(took)
        back.append(returned)
    return {"failover_detect_ms": statistics.median(detect) * 1000,
            "failover_detect_max_ms": max(detect) * 1000,
            "failback_ms": statistics.median(back) * 1000, "failover_trials": float(trials)}


def _first(served: list[tuple[float, str]], region: str, after: float) -> float | None:
    """When the first job `region` served after `after` had its first token."""
    return min((at for at, r in served if r == region and at > after), default=None)


async def _one_failover(stack: Any, tier: Any, trial: int) -> tuple[float, float]:
    """(kill of a's backend -> first token served by b, a's backend SERVING again ->
    first token served by a), in seconds."""
    from cmesh.supervisor import kill_group

    served: list[tuple[float, str]] = []  # (first token at, region) of each job
    stop = asyncio.Event()
    lanes = [asyncio.create_task(_keep_asking(tier, f"{trial}.{i}", served, stop))
             for i in range(2)]
    await asyncio.sleep(2.0)
    victim = stack.services["backend-a"]
    killed = time.perf_counter()
    kill_group(victim.proc.pid)
    await victim.proc.wait()
    await _until(lambda: _first(served, "b", killed) is not None, 60,
                 "no job served by region b within 60 s of a's loss")
    detect = (_first(served, "b", killed) or 0.0) - killed
    stop.set()  # two cores: a vLLM engine starts slowly beside a busy one
    await asyncio.gather(*lanes)
    console.print(f"trial {trial}: b served {detect * 1000:.0f} ms after a's backend died; "
                  "restarting a's backend...")
    await stack.respawn("backend-a")
    returned = time.perf_counter()
    again = asyncio.Event()
    probe = asyncio.create_task(_keep_asking(tier, f"{trial}.back", served, again))
    await _until(lambda: _first(served, "a", returned) is not None, 60,
                 "region a not serving again within 60 s of its backend")
    again.set()
    await probe
    return detect, (_first(served, "a", returned) or 0.0) - returned


async def _replication(sc: Any, quick: bool) -> dict[str, float]:
    import grpc

    from cache.verifier import FeatureVerifier
    from core.embedder import Embedder
    from protos.cache.v1 import cache_pb2, cache_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.cache.main import CacheNode
    from services.cache.settings import CacheSettings

    embedder, verifier = Embedder(), FeatureVerifier.load()
    scope = cache_pb2.Scope(tenant="bench", sampling=common_pb2.SamplingParams(temperature=0))
    lags: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for region in REGIONS:
            node = await stack.enter_async_context(CacheNode(CacheSettings(
                nats_url=sc.url(region), region=region,
                peer_regions=[r for r in REGIONS if r != region], port=0), embedder, verifier))
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}"))
            stubs[region] = cache_pb2_grpc.CacheStub(channel)
        for i in range(-1, 15 if quick else 60):  # the first one starts the sources: not counted
            prompt = f"What is the {i}th entry of the regional benchmark table {uuid.uuid4().hex}?"
            stored = await stubs["a"].Store(cache_pb2.StoreRequest(
                scope=scope, prompt=prompt, answer=f"Entry {i}."))
            if not stored.durable:
                raise RuntimeError("region a's cache did not store durably")
            t0 = time.perf_counter()
            while not (await stubs["b"].Lookup(cache_pb2.LookupRequest(
                    scope=scope, prompt=prompt))).hit:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("no hit in region b within 30 s")
                await asyncio.sleep(_POLL_S)
            if i >= 0:
                lags.append(time.perf_counter() - t0)
    return {"replication_lag_p50_ms": statistics.median(lags) * 1000,
            "replication_lag_p99_ms": percentile(lags, 0.99) * 1000,
            "replication_events": float(len(lags))}


async def _bench(quick: bool, state: Path) -> dict[str, Any]:
    from cmesh.stack import LocalStack
    from services.broker.beacons import TierWatch
    from services.broker.client import BrokerClient
    from services.common.regions import Supercluster

    console.print("starting two regions (a nats-server each, joined as a supercluster)...")
    async with Supercluster(REGIONS, store_dir=state / "supercluster") as sc:
        console.print("starting a SmolLM2 backend and a broker in each region...")
        async with LocalStack(_specs(sc), state / "stack", mesh_tls=False) as stack, \
                BrokerClient(sc.url("a"), tier_watch=TierWatch(1.5)) as client:
            watch = client.tier_watch
            assert watch is not None
            end = time.monotonic() + 30
            while not all(watch.live_brokers(t, r) for t in ("small", "same") for r in REGIONS):
                if time.monotonic() > end:
                    raise RuntimeError("the regions' brokers do not beacon")
                await asyncio.sleep(0.05)
            console.print("TTFT served in a against served by b (A-B-B-A)...")
            figures = await _ttft(client, quick)
            console.print("failover: a's backend killed under a stream of jobs...")
            figures |= await _failover(stack, client, 1 if quick else 3)
        console.print("cache replication a -> b...")
        figures |= await _replication(sc, quick)
    figures["note"] = ("one machine: no network between regions; add RTT to TTFT, RTT/2 "
                       "to lag and detection (module doc)")
    return figures


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="cmesh-bench-regions-") as state:
        figures = terminate.run(_bench(quick, Path(state)))
    emit("cmesh bench regions: failover between two regions, cache replication",
         figures, as_json)
