"""`cmesh bench gateway`: what the gateway adds on a miss, and the throughput it keeps.

One run starts nats-server, one SmolLM2 backend (serving both tiers, so the
route policy still calls the classifier), the cache, the classifier, the
broker and the gateway (tiers through the broker's JetStream queues), each as
its own process (`LocalStack`), then:

- miss overhead: time to first token of a new prompt through the gateway
  (API key, cache lookup, classifier score, route, generate) against the same
  prompt sent straight to the backend; pairs alternate which path goes first
  (prefix caching would otherwise favour the second). Reported as the added
  milliseconds (p50, p99 of the paired differences) and as the p50 over one
  MiniLM encode of the same prompt measured in this run (`miss_overhead_vs_encode`);
- throughput: generated tokens/s at concurrency 16 through the gateway with the
  cache skipped against direct backend calls of the same prompts
  (`throughput_kept`), rounds alternating which path goes first.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from typing import Any

from cmesh import terminate
from cmesh.output import console, emit


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _bench(quick: bool) -> dict[str, float]:
    import grpc

    from cmesh.bench.mesh import bench_state, one_engine_mesh
    from cmesh.client import build_request
    from cmesh.stack import LocalStack, ServiceSpec
    from core.embedder import Embedder
    from protos.backend.v1 import backend_pb2, backend_pb2_grpc
    from protos.common.v1 import common_pb2
    from protos.gateway.v1 import gateway_pb2_grpc

    pairs = 12 if quick else 40
    n_throughput, max_tokens = (16, 32) if quick else (48, 64)
    rounds = 2
    state, keys_file, key = bench_state("gateway")

    def direct_peers(addresses: dict[str, str]) -> list[str]:
        backend = addresses["backend-small"]
        return ["--backend_addresses", json.dumps({"small": backend, "large": backend}),
                *gateway_peers(addresses)]

    def gateway_peers(addresses: dict[str, str]) -> list[str]:
        return ["--cache_address", addresses["cache"],
                "--classifier_address", addresses["classifier"],
                "--api_keys_file", str(keys_file), "--policy", "route",
                "--rate_limit_per_s", "10000", "--rate_limit_burst", "10000"]

    specs = [*one_engine_mesh(gateway_peers),
             ServiceSpec("gateway-direct", "services.gateway",
                         needs=("backend-small", "cache", "classifier"),
                         peer_args=direct_peers)]
    console.print("starting nats, backend (SmolLM2), cache, classifier, broker, gateway...")
    embedder = await asyncio.to_thread(Embedder)
    auth = (("authorization", f"Bearer {key}"),)
    stages: dict[str, list[float]] = {"cache": [], "classifier": [], "tier": []}
    timeouts: list[str] = []  # measured misses whose cache lookup timed out
    async with LocalStack(specs, state, mesh_tls=False) as stack, \
            grpc.aio.insecure_channel(stack.services["gateway"].address) as gw_channel, \
            grpc.aio.insecure_channel(stack.services["gateway-direct"].address) as gd_channel, \
            grpc.aio.insecure_channel(stack.services["backend-small"].address) as be_channel:
        backend = backend_pb2_grpc.BackendStub(be_channel)

        def through(channel: grpc.aio.Channel, broker: bool) -> Any:
            gateway = gateway_pb2_grpc.GatewayStub(channel)

            async def run(prompt: str, tokens: int, skip_cache: bool,
                          warm: bool = False) -> tuple[float, int]:
                request = build_request(prompt, max_tokens=tokens, skip_cache=skip_cache)
                start, first, count = time.perf_counter(), 0.0, 0
                async for chunk in gateway.AskStream(request, metadata=auth, timeout=600):
                    if chunk.WhichOneof("kind") == "text_delta":
                        first = first or time.perf_counter() - start
                    else:
                        meta = chunk.metadata
                        count = meta.usage.completion_tokens
                        if not (skip_cache or warm) and meta.cache_status == "hit":
                            raise RuntimeError("expected a miss: the prompt was cached")
                        if not (skip_cache or warm) and meta.cache_status == "unavailable":
                            timeouts.append(prompt)  # the lookup's time still counts
                        if not skip_cache:
                            stages["cache"].append(meta.latency.cache_ms)
                            stages["classifier"].append(meta.latency.classifier_ms)
                        if broker and not skip_cache:
                            # the gateway's own clock: route -> first token (broker, backend)
                            lat = meta.latency
                            stages["tier"].append(
                                lat.first_token_ms - lat.cache_ms - lat.classifier_ms)
                return first * 1000, count

            return run

        via_gateway, via_gateway_direct = through(gw_channel, True), through(gd_channel, False)

        async def direct(prompt: str, tokens: int, skip_cache: bool = True) -> tuple[float, int]:
            request = backend_pb2.GenerateRequest(
                prompt=prompt, chat=True, return_logprobs=True,
                sampling=common_pb2.SamplingParams(temperature=0, max_tokens=tokens))
            start, first, count = time.perf_counter(), 0.0, 0
            async for chunk in backend.Generate(request, timeout=600):
                if chunk.text_delta:
                    first = first or time.perf_counter() - start
                if chunk.finish_reason:
                    count = chunk.usage.completion_tokens
            return first * 1000, count

        # Warm every path, at several prompt lengths: the first encodes of each new
        # shape in a fresh process take up to seconds (one-off kernel set-up).
        for i in range(8):
            words = " ".join(["river"] * (i * 3))
            await via_gateway(f"Warm-up {i}: name a {words} river.", 2, False, True)
            await via_gateway_direct(f"Warm-up {i}: name one {words} river.", 2, False, True)
            await direct(f"Warm-up {i}: name a {words} river.", 2)
        for values in stages.values():
            values.clear()
        added: list[float] = []
        added_direct_tiers: list[float] = []
        direct_ttft: list[float] = []
        encode_ms: list[float] = []
        for i in range(pairs):
            prompt = f"Bench question {i}: what is {i * 7 + 3} multiplied by {i + 11}?"
            order = [("gateway", via_gateway), ("direct", direct)]
            results: dict[str, float] = {}
            for name, run in order if i % 2 == 0 else order[::-1]:
                results[name] = (await run(prompt, 1, False))[0]
            added.append(results["gateway"] - results["direct"])
            direct_ttft.append(results["direct"])
            # The same without the broker hop (a prompt of its own: it must miss too),
            # alternating too: whichever goes second finds the prompt prefix-cached.
            other = prompt.replace("Bench question", "Other question")
            order = [("gateway", via_gateway_direct), ("direct", direct)]
            for name, run in order if i % 2 == 0 else order[::-1]:
                results[name] = (await run(other, 1, False))[0]
            added_direct_tiers.append(results["gateway"] - results["direct"])
            start = time.perf_counter()
            await asyncio.to_thread(embedder.encode, [prompt])
            encode_ms.append((time.perf_counter() - start) * 1000)
        console.print(f"miss overhead: p50 {_pct(added, 0.5):.1f} ms, "
                      f"encode p50 {statistics.median(encode_ms):.1f} ms")

        async def throughput(run: object, prompts: list[str]) -> tuple[int, float]:
            gate = asyncio.Semaphore(16)

            async def one(prompt: str) -> int:
                async with gate:
                    return (await run(prompt, max_tokens, True))[1]  # type: ignore[operator]

            start = time.perf_counter()
            counts = await asyncio.gather(*(one(p) for p in prompts))
            return sum(counts), time.perf_counter() - start

        totals = {"gateway": [0, 0.0], "direct": [0, 0.0]}
        for r in range(rounds):
            prompts = [f"Round {r} topic {i}: describe a city in detail."
                       for i in range(n_throughput)]
            order = [("gateway", via_gateway), ("direct", direct)]
            for name, run in order if r % 2 == 0 else order[::-1]:
                tokens, seconds = await throughput(run, prompts)
                totals[name][0] += tokens
                totals[name][1] += seconds
                console.print(f"round {r} {name}: {tokens / seconds:.1f} tok/s")
    gw_rate = totals["gateway"][0] / totals["gateway"][1]
    direct_rate = totals["direct"][0] / totals["direct"][1]
    encode = statistics.median(encode_ms)
    return {
        "miss_added_ms_p50": _pct(added, 0.5), "miss_added_ms_p99": _pct(added, 0.99),
        "minilm_encode_ms_p50": encode,
        "miss_overhead_vs_encode": _pct(added, 0.5) / encode,
        "miss_overhead_p99_vs_encode": _pct(added, 0.99) / encode,
        "miss_added_ms_p50_without_broker": _pct(added_direct_tiers, 0.5),
        "miss_cache_ms_p50": _pct(stages["cache"], 0.5),
        "miss_cache_timeouts": len(timeouts),
        "miss_classifier_ms_p50": _pct(stages["classifier"], 0.5),
        "miss_tier_first_token_ms_p50": _pct(stages["tier"], 0.5),
        "direct_first_token_ms_p50": _pct(direct_ttft, 0.5),
        "gateway_tok_s_c16": gw_rate, "direct_tok_s_c16": direct_rate,
        "throughput_kept": gw_rate / direct_rate, "pairs": pairs,
        "max_tokens": max_tokens, "broker": 1,
    }


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = terminate.run(_bench(quick))
    emit("gateway: miss overhead and throughput kept", figures, as_json)
