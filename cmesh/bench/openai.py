"""`cmesh bench openai`: what the OpenAI-compatible HTTP door adds over gRPC `Ask` on the
same gateway, and what a running batch does to interactive answers.

One run starts nats-server, one SmolLM2 backend (serving both tiers), the
cache, the classifier, the broker and a gateway with its HTTP door (`LocalStack`,
each its own process), then, with the cache skipped so every call generates:

- `door_ttft_added_p50_ms`: time to first token of a streamed chat completion
  through the door minus that of `AskStream` through gRPC, a new prompt of the
  same shape per call (so neither side finds the other's prompt prefix-cached),
  A-B-B-A (`cmesh.bench.fair.compare`);
- `door_throughput_ratio`: generated tokens/s at concurrency 16 through the
  door over the same through gRPC, A-B-B-A rounds;
- `batch_interactive_ttft_ratio`: interactive time to first token through
  the door while a batch runs (Batch API, the broker's batch class) over the
  same with the mesh idle.

Both clients are plain (httpx with SSE parsed by hand, grpc.aio), so neither
side pays for an SDK's own parsing.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from typing import Any

from cmesh import terminate
from cmesh.bench.fair import Sample, compare
from cmesh.output import console, emit


async def _bench(quick: bool) -> dict[str, float]:
    import grpc
    import httpx

    from cmesh.bench.mesh import bench_state, door_gateway, one_engine_mesh
    from cmesh.client import build_request
    from cmesh.stack import DOOR_PORT_FILE, LocalStack
    from protos.gateway.v1 import gateway_pb2_grpc

    pairs, rounds = (6, 2) if quick else (20, 4)
    n_throughput, max_tokens, batch_lines = (16, 32, 80) if quick else (48, 64, 200)
    state, keys_file, key = bench_state("openai")

    specs = one_engine_mesh(door_gateway(keys_file, state / DOOR_PORT_FILE))
    console.print("starting nats, backend (SmolLM2), cache, classifier, broker, gateway...")
    auth = {"authorization": f"Bearer {key}", "x-cmesh-skip-cache": "1"}
    async with LocalStack(specs, state) as stack, \
            grpc.aio.insecure_channel(stack.services["gateway"].address) as channel, \
            httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        base = f"http://127.0.0.1:{(state / DOOR_PORT_FILE).read_text().strip()}/v1"
        gateway = gateway_pb2_grpc.GatewayStub(channel)

        async def door(prompt: str, tokens: int) -> tuple[float, int]:
            body = {"model": "small", "stream": True, "max_tokens": tokens, "temperature": 0,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": prompt}]}
            start, first, count = time.perf_counter(), 0.0, 0
            async with http.stream("POST", base + "/chat/completions", json=body,
                                   headers=auth) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = first or time.perf_counter() - start
                    if chunk.get("usage"):
                        count = chunk["usage"]["completion_tokens"]
            return first * 1000, count

        async def ask(prompt: str, tokens: int) -> tuple[float, int]:
            request = build_request(prompt, max_tokens=tokens, skip_cache=True,
                                    force_tier="small", temperature=0)
            start, first, count = time.perf_counter(), 0.0, 0
            async for chunk in gateway.AskStream(request, timeout=600,
                                                 metadata=(("authorization", f"Bearer {key}"),)):
                if chunk.WhichOneof("kind") == "text_delta":
                    first = first or time.perf_counter() - start
                else:
                    count = chunk.metadata.usage.completion_tokens
            return first * 1000, count

        def ttft_side(run: Any, tag: str) -> Any:
            async def one_round(r: int) -> Sample:
                latencies = [(await run(f"Question {tag}{r}.{i}: name a city in country {i}.",
                                        1))[0] for i in range(pairs)]
                return Sample(work=len(latencies), seconds=1.0, latencies=latencies)
            return one_round

        ttft = await compare({"door": ttft_side(door, "d"), "grpc": ttft_side(ask, "g")},
                             rounds, report=console.print)

        def rate_side(run: Any) -> Any:
            async def one_round(r: int) -> Sample:
                gate = asyncio.Semaphore(16)

                async def one(i: int) -> int:
                    async with gate:
                        return (await run(f"Round {r} topic {i}: describe a city.",
                                          max_tokens))[1]

                start = time.perf_counter()
                counts = await asyncio.gather(*(one(i) for i in range(n_throughput)))
                return Sample(work=sum(counts), seconds=time.perf_counter() - start)
            return one_round

        rates = await compare({"door": rate_side(door), "grpc": rate_side(ask)}, rounds,
                              report=console.print)
        idle = [(await door(f"Idle question {i}: name a river in country {i}.", 1))[0]
                for i in range(pairs)]
        lines = "\n".join(json.dumps({
            "custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "small", "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": f"Tell a fact about {i}."}]}})
            for i in range(batch_lines))
        upload = (await http.post(base + "/files", headers=auth, data={"purpose": "batch"},
                                  files={"file": ("bench.jsonl", lines.encode())})).json()
        batch = (await http.post(base + "/batches", headers=auth, json={
            "input_file_id": upload["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})).json()
        while (await http.get(f"{base}/batches/{batch['id']}", headers=auth)
               ).json()["request_counts"]["completed"] < 2:
            await asyncio.sleep(0.5)
        busy = [(await door(f"Busy question {i}: name a river in country {i}.", 1))[0]
                for i in range(pairs)]
        done = (await http.get(f"{base}/batches/{batch['id']}", headers=auth)).json()
        await http.post(f"{base}/batches/{batch['id']}/cancel", headers=auth)
    door_p50, grpc_p50 = ttft["door"].latency_p50, ttft["grpc"].latency_p50
    return {
        "door_ttft_ms_p50": door_p50, "grpc_ttft_ms_p50": grpc_p50,
        "door_ttft_added_p50_ms": door_p50 - grpc_p50,
        "door_tok_s_c16": rates["door"].rate, "grpc_tok_s_c16": rates["grpc"].rate,
        "door_throughput_ratio": rates["door"].rate / rates["grpc"].rate,
        "idle_ttft_ms_p50": statistics.median(idle),
        "busy_ttft_ms_p50": statistics.median(busy),
        "batch_interactive_ttft_ratio": statistics.median(busy) / statistics.median(idle),
        "batch_lines_done_while_measured": done["request_counts"]["completed"],
        "pairs": pairs, "rounds": rounds, "max_tokens": max_tokens,
    }


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = terminate.run(_bench(quick))
    emit("openai door: added TTFT, throughput kept, TTFT under a batch", figures, as_json)
