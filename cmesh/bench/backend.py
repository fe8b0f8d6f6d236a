"""`cmesh bench backend`: the gRPC backend against the same AsyncLLM called directly.

Both paths share one engine in this process, run the same prompts with the same
sampling (greedy, fixed length via ignore_eos), alternate round by round, and
report generated tokens per second; `ratio` is gRPC over direct at concurrency 16.
Prefix caching is off so neither path profits from the other's prompts.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from cmesh.output import console, emit

Runner = Callable[[str], Awaitable[int]]


async def _throughput(run_one: Runner, prompts: list[str], concurrency: int) -> tuple[int, float]:
    """Generated tokens and seconds to push `prompts` through with `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(prompt: str) -> int:
        async with gate:
            return await run_one(prompt)

    start = time.perf_counter()
    tokens = await asyncio.gather(*(bounded(p) for p in prompts))
    return sum(tokens), time.perf_counter() - start


async def _bench(quick: bool) -> dict[str, float]:
    import grpc
    from prometheus_client import CollectorRegistry
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from protos.backend.v1 import backend_pb2, backend_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.backend.engine import VllmEngine
    from services.backend.metrics import BackendMetrics
    from services.backend.servicer import BackendServicer
    from services.backend.settings import BackendSettings
    from services.common.server import GrpcService

    max_tokens = 32 if quick else 64
    rounds = 1 if quick else 2
    sizes = {1: 4 if quick else 8, 16: 16 if quick else 64}
    settings = BackendSettings(enable_prefix_caching=False, max_num_seqs=16, port=0)
    engine = VllmEngine(settings)
    console.print("starting the engine (SmolLM2, CPU)...")
    await engine.start()
    servicer = BackendServicer(engine, BackendMetrics(CollectorRegistry(), "bench"))
    service = GrpcService(
        "bench", settings, service_names=[],
        register=lambda s: backend_pb2_grpc.add_BackendServicer_to_server(servicer, s),
    )
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    tokenizer = engine.llm.get_tokenizer()

    async def direct(prompt: str) -> int:
        ids = tokenizer(prompt)["input_ids"]
        count = 0
        async for out in engine.llm.generate({"prompt_token_ids": ids}, params,
                                             uuid.uuid4().hex):
            count += len(out.outputs[0].token_ids)
        return count

    try:
        async with service, grpc.aio.insecure_channel(service.address) as channel:
            stub = backend_pb2_grpc.BackendStub(channel)

            async def via_grpc(prompt: str) -> int:
                request = backend_pb2.GenerateRequest(
                    prompt=prompt,
                    sampling=common_pb2.SamplingParams(temperature=0, max_tokens=max_tokens))
                request.sampling_overrides.update({"ignore_eos": True})
                count = 0
                async for chunk in stub.Generate(request, timeout=600):
                    count += len(chunk.token_ids)
                return count

            await _throughput(direct, [f"Warm-up {i}: tell me about rivers." for i in range(4)], 4)
            figures: dict[str, float] = {}
            for concurrency, n in sizes.items():
                totals = {"direct": [0, 0.0], "grpc": [0, 0.0]}
                for r in range(rounds):
                    prompts = [f"Question {r}-{i}: describe the city number {i} in detail."
                               for i in range(n)]
                    for name, runner in (("direct", direct), ("grpc", via_grpc)):
                        tokens, seconds = await _throughput(runner, prompts, concurrency)
                        totals[name][0] += tokens
                        totals[name][1] += seconds
                        console.print(f"c={concurrency} round {r} {name}: "
                                      f"{tokens / seconds:.1f} tok/s")
                for name, (tokens, seconds) in totals.items():
                    figures[f"{name}_tok_s_c{concurrency}"] = tokens / seconds
                figures[f"ratio_c{concurrency}"] = (
                    figures[f"grpc_tok_s_c{concurrency}"] / figures[f"direct_tok_s_c{concurrency}"]
                )
            figures["ratio"] = figures["ratio_c16"]
            figures["max_tokens"] = max_tokens
            return figures
    finally:
        engine.shutdown()


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = asyncio.run(_bench(quick))
    emit("backend: gRPC vs direct AsyncLLM (generated tokens/s)", figures, as_json)
