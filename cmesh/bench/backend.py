"""`cmesh bench backend`: the gRPC backend against the same AsyncLLM called directly.

Both paths share one engine: the backend service's own (`BackendNode`, as
`cmesh serve backend` runs it). They run the same prompts with the same
sampling (greedy, fixed length via ignore_eos), are warmed up alike and
alternate A-B-B-A (`cmesh.bench.fair`); the figures are generated tokens per
second, `ratio` is gRPC over direct at concurrency 16. Prefix caching is off
so neither path profits from the other's prompts.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from cmesh import terminate
from cmesh.bench.fair import Sample, compare
from cmesh.output import console, emit

Runner = Callable[[str], Awaitable[int]]


async def _throughput(run_one: Runner, prompts: list[str], concurrency: int) -> Sample:
    """Generated tokens and seconds to push `prompts` through with `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(prompt: str) -> int:
        async with gate:
            return await run_one(prompt)

    start = time.perf_counter()
    tokens = await asyncio.gather(*(bounded(p) for p in prompts))
    return Sample(work=sum(tokens), seconds=time.perf_counter() - start)


async def _bench(quick: bool) -> dict[str, float]:
    import grpc
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from protos.backend.v1 import backend_pb2, backend_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.backend.main import BackendNode
    from services.backend.settings import BackendSettings

    max_tokens = 32 if quick else 64
    sizes = {1: 4 if quick else 8, 16: 16 if quick else 64}
    settings = BackendSettings(enable_prefix_caching=False, max_num_seqs=16, port=0,
                               served_name="bench")
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True,
                            output_kind=RequestOutputKind.DELTA)
    console.print("starting the backend (SmolLM2, CPU)...")
    async with BackendNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        assert node.engine is not None
        llm = node.engine.llm
        tokenizer = llm.get_tokenizer()
        stub = backend_pb2_grpc.BackendStub(channel)

        async def direct(prompt: str) -> int:
            count = 0
            async for out in llm.generate({"prompt_token_ids": tokenizer(prompt)["input_ids"]},
                                          params, uuid.uuid4().hex):
                count += len(out.outputs[0].token_ids)
            return count

        async def via_grpc(prompt: str) -> int:
            request = backend_pb2.GenerateRequest(
                prompt=prompt,
                sampling=common_pb2.SamplingParams(temperature=0, max_tokens=max_tokens))
            request.sampling_overrides.update({"ignore_eos": True})
            count = 0
            async for chunk in stub.Generate(request, timeout=600):
                count += len(chunk.token_ids)
            return count

        figures: dict[str, float] = {}
        for concurrency, n in sizes.items():
            def side(runner: Runner, c: int = concurrency, n: int = n) -> Callable:
                def run(r: int) -> Awaitable[Sample]:
                    count = n if r >= 0 else min(n, c)  # a warm-up round fills the batch once
                    prompts = [f"Question {r}-{i}: describe the city number {i} in detail."
                               for i in range(count)]
                    return _throughput(runner, prompts, c)
                return run

            sides = await compare({"direct": side(direct), "grpc": side(via_grpc)}, rounds=2,
                                  report=lambda line, c=concurrency: console.print(f"c={c} {line}"))
            for name, result in sides.items():
                figures[f"{name}_tok_s_c{concurrency}"] = result.rate
            figures[f"ratio_c{concurrency}"] = sides["grpc"].rate / sides["direct"].rate
        figures["ratio"] = figures["ratio_c16"]
        figures["max_tokens"] = max_tokens
        return figures


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = terminate.run(_bench(quick))
    emit("backend: gRPC vs direct AsyncLLM (generated tokens/s), A-B-B-A", figures, as_json)
