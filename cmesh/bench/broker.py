"""`cmesh bench broker`: the broker against direct gRPC to the same backends, one run.

Starts a nats-server, two SmolLM2 backends and two brokers (scored dispatch
with prefix affinity, and random dispatch as the baseline), then measures:

- `ratio`: generated tokens/s through client -> JetStream -> broker -> backend
  over the same prompts sent straight to the backend's gRPC, concurrency 16,
  rounds A-B-B-A after a warm-up round each (`cmesh.bench.fair`; tier `one`:
  replica A only).
- `added_ttft_p50_ms` / `added_ttft_p99_ms`: time to first token through the
  broker minus direct, one request at a time, fresh prompts of one length
  alternating between the two paths (so the prefix cache helps neither).
- `affinity_ttft_ratio`: TTFT p50 with affinity over TTFT p50 with random
  dispatch, two replicas, prompts sharing long system prompts (each system
  prompt asked several times, in shuffled order; fresh system prompts per
  policy so neither inherits the other's cache). Lower is better.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cmesh import terminate
from cmesh.bench.fair import Sample, compare, percentile, timed
from cmesh.output import console, emit


def _system_prompt(i: int, words: int) -> str:
    rng = random.Random(i)
    vocab = ["river", "mountain", "archive", "lantern", "harbour", "orchard", "signal",
             "compass", "meadow", "quarry", "ledger", "beacon", "granite", "willow"]
    body = " ".join(rng.choice(vocab) for _ in range(words))
    return f"You are assistant number {i}. Background notes: {body}."


async def _bench(quick: bool, state: Path) -> dict[str, Any]:
    import grpc

    from cmesh.stack import LocalStack, ServiceSpec
    from protos.backend.v1 import backend_pb2, backend_pb2_grpc
    from protos.broker.v1 import broker_pb2
    from protos.common.v1 import common_pb2
    from services.broker.client import BrokerClient

    backend_args = ("--served_name", "small", "--max_num_seqs", "16", "--kv_cache_gib", "1",
                    "--drain_seconds", "0")
    specs = [
        ServiceSpec("backend-a", "services.backend", backend_args),
        ServiceSpec("backend-b", "services.backend", backend_args),
        ServiceSpec("broker", "services.broker",
                    ("--backends", "one={backend-a};aff={backend-a},{backend-b}",
                     "--load_poll_s", "0.05", "--lookahead", "0"),
                    needs_nats=True, needs=("backend-a", "backend-b")),
        ServiceSpec("broker-random", "services.broker",
                    ("--backends", "rnd={backend-a},{backend-b}", "--dispatch", "random",
                     "--load_poll_s", "0.05", "--lookahead", "0"),
                    needs_nats=True, needs=("backend-a", "backend-b")),
    ]
    console.print("starting nats-server, two SmolLM2 backends and two brokers...")
    async with LocalStack(specs, state, mesh_tls=False) as stack:  # it dials a backend
        a, b = stack.services["backend-a"].address, stack.services["backend-b"].address
        del b
        channel = grpc.aio.insecure_channel(a)
        stub = backend_pb2_grpc.BackendStub(channel)
        client = await BrokerClient(stack.nats_url or "",
                                    connect_options=stack.nats_options("gateway")).__aenter__()
        max_tokens = 24 if quick else 48

        def sampling(n: int) -> common_pb2.SamplingParams:
            return common_pb2.SamplingParams(temperature=0.0, max_tokens=n)

        async def direct(prompt: str, n: int, system: str = "") -> tuple[float, int]:
            request = backend_pb2.GenerateRequest(prompt=prompt, chat=True, sampling=sampling(n))
            request.conversation.system_prompt = system
            start, ttft, tokens = time.perf_counter(), 0.0, 0
            async for chunk in stub.Generate(request, timeout=600):
                if not ttft and chunk.token_ids:
                    ttft = time.perf_counter() - start
                tokens += len(chunk.token_ids)
            return ttft, tokens

        async def brokered(prompt: str, n: int, tier: str = "one",
                           system: str = "") -> tuple[float, int]:
            job = broker_pb2.GenerateJob(tier=tier, prompt=prompt, chat=True, stream=True,
                                         sampling=sampling(n))
            job.conversation.system_prompt = system
            start, ttft, tokens = time.perf_counter(), 0.0, 0
            async for chunk in await client.submit(job, deadline_s=600):
                if not ttft and chunk.token_ids:
                    ttft = time.perf_counter() - start
                tokens += len(chunk.token_ids)
            return ttft, tokens

        figures: dict[str, Any] = {}
        try:
            # throughput at concurrency 16: the kit's A-B-B-A rounds over the same prompts
            n = 16 if quick else 32

            def side(run: Any) -> Any:
                async def one_round(r: int) -> Sample:
                    gate = asyncio.Semaphore(16)

                    async def one(i: int) -> int:
                        async with gate:
                            return (await run(f"Question {r}-{i}: describe town {i}.",
                                              max_tokens))[1]

                    async def work() -> float:
                        return float(sum(await asyncio.gather(*(one(i) for i in range(n)))))

                    return await timed(work)

                return one_round

            sides = await compare({"direct": side(direct), "broker": side(brokered)},
                                  rounds=2 if quick else 4, warmup=1, report=console.print)
            figures["direct_tok_s_c16"] = sides["direct"].rate
            figures["broker_tok_s_c16"] = sides["broker"].rate
            figures["ratio"] = sides["broker"].rate / sides["direct"].rate
            # added TTFT, one at a time
            pairs = 10 if quick else 40
            d_ttft, b_ttft = [], []
            for i in range(pairs):
                order = [("d", direct), ("b", brokered)]
                if i % 2:
                    order.reverse()
                for tag, run in order:
                    ttft, _ = await run(f"Item {i}{tag}: name a colour.", 1)
                    (d_ttft if tag == "d" else b_ttft).append(ttft * 1000)
            for q, key in ((0.5, "p50"), (0.99, "p99")):
                figures[f"direct_ttft_{key}_ms"] = percentile(d_ttft, q)
                figures[f"broker_ttft_{key}_ms"] = percentile(b_ttft, q)
                figures[f"added_ttft_{key}_ms"] = (percentile(b_ttft, q)
                                                   - percentile(d_ttft, q))
            # affinity against random dispatch
            systems, asks = (4, 3) if quick else (8, 4)
            for tier, offset in (("aff", 0), ("rnd", 1000)):
                plan = [(s, k) for s in range(systems) for k in range(asks)]
                random.Random(7).shuffle(plan)
                ttfts = []
                for s, k in plan:
                    ttft, _ = await brokered(f"Question {k}: summarise the notes.", 1, tier,
                                             _system_prompt(offset + s, 500))
                    ttfts.append(ttft * 1000)
                figures[f"{tier}_ttft_p50_ms"] = statistics.median(ttfts)
            figures["affinity_ttft_ratio"] = figures["aff_ttft_p50_ms"] / figures["rnd_ttft_p50_ms"]
            figures["max_tokens"] = max_tokens
        finally:
            await client.__aexit__(None, None, None)
            await channel.close()
        return figures


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="cmesh-bench-broker-") as tmp:
        figures = terminate.run(_bench(quick, Path(tmp)))
    emit("broker: client -> JetStream -> broker -> backend, against direct gRPC", figures,
         as_json)
