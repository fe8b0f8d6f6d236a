"""`cmesh bench prefill`: what the small tier's Prefill costs, and the KV reuse it buys.

One SmolLM2 backend (`BackendNode`, prefix caching on, as shipped). Two sides
alternate A-B-B-A (`cmesh.bench.fair`), each on prompts never sent before
(a distinct development prompt each, so no side finds another's blocks):

- `after_prefill`: Prefill(prompt), then Generate(prompt) at once, as a router
  that scores a prompt before answering it on the small tier would;
- `cold`: Generate(prompt) alone.

Both generate with the chat template, as the gateway sends the small tier.
Figures: the Prefill call's latency (`prefill_score_ms`, p50), the time to
first token of each side (p50) and their ratio
(`small_ttft_after_prefill_ratio` = after / cold: below 1 is the KV reuse),
and `score_then_answer_ratio` = (prefill + TTFT after it) / cold TTFT, the
first-token latency a router pays for scoring in series. vLLM on CPU caches
whole blocks of 128 tokens only, so a prompt shorter than one block gains
nothing; the `long_` figures repeat the measure on prompts of several blocks
(four development prompts joined), and `prefix_hit_share` is the share of
the prompt tokens of the Generate calls found in the cache, read from the
backend's own counters.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cmesh import terminate
from cmesh.output import console, emit


def _pool(n: int) -> list[str]:
    """`n` distinct development prompts: GSM8K questions, then MMLU ones (no lockbox)."""
    from cascade.data import read_tables
    from cascade.lockbox import Lockbox, split

    data = Path("data/routellm")
    prompts = split(read_tables(data), Lockbox.load()).development.prompts
    gsm = [p for p in prompts if "\nA." not in p]
    rest = [p for p in prompts if "\nA." in p]
    pool = gsm + rest
    if len(pool) < n:
        raise RuntimeError(f"{data}: {len(pool)} development prompts, the bench needs {n}")
    return pool[:n]


async def _bench(quick: bool) -> dict[str, Any]:
    import grpc

    from cmesh.bench.fair import Sample, compare
    from protos.backend.v1 import backend_pb2, backend_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.backend.main import BackendNode
    from services.backend.settings import BackendSettings

    rounds, per_round = (2, 6) if quick else (6, 8)
    warm = per_round
    settings = BackendSettings(port=0, served_name="bench", max_num_seqs=8,
                               enable_prefix_caching=True)
    sets = {"short": 1, "long": 4}  # development prompts joined into one prompt
    need = sum(k * 2 * per_round * (rounds + 1) for k in sets.values())
    pool = iter(_pool(need + warm))
    console.print("starting the backend (SmolLM2, CPU, prefix caching on)...")
    figures: dict[str, Any] = {}
    async with BackendNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = backend_pb2_grpc.BackendStub(channel)
        registry = node.registry
        info = node.engine.info() if node.engine else None

        def counter(name: str) -> float:
            return float(registry.get_sample_value(name, {"tier": "bench"}) or 0.0)

        async def ttft(prompt: str) -> float:
            request = backend_pb2.GenerateRequest(
                prompt=prompt, chat=True,
                sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=4))
            start = time.perf_counter()
            first = None
            async for chunk in stub.Generate(request, timeout=300):
                if first is None and chunk.token_ids:
                    first = time.perf_counter() - start
            assert first is not None
            return first

        scored: list[float] = []
        hits: dict[str, list[float]] = {}

        async def after_prefill(prompt: str) -> float:
            start = time.perf_counter()
            await stub.Prefill(backend_pb2.PrefillRequest(prompt=prompt, chat=True),
                               timeout=300)
            scored.append(time.perf_counter() - start)
            return await ttft(prompt)

        def side(name: str, k: int, call: Callable[[str], Awaitable[float]]
                 ) -> Callable[[int], Awaitable[Sample]]:
            async def run(r: int) -> Sample:
                prompts = ["\n\n".join(next(pool) for _ in range(k)) for _ in range(per_round)]
                latencies = []
                for prompt in prompts:
                    # The stat logger is fed each engine step: settle before reading.
                    await asyncio.sleep(0.05)
                    q0, h0 = counter("backend_prefix_cache_queried_tokens_total"), counter(
                        "backend_prefix_cache_hit_tokens_total")
                    latencies.append(await call(prompt))
                    await asyncio.sleep(0.05)
                    q = counter("backend_prefix_cache_queried_tokens_total") - q0
                    h = counter("backend_prefix_cache_hit_tokens_total") - h0
                    if r >= 0:
                        hits.setdefault(name, []).append(h / q if q else 0.0)
                return Sample(len(latencies), sum(latencies), latencies)
            return run

        for label, k in sets.items():
            scored.clear()
            sides = await compare({"after_prefill": side("after", k, after_prefill),
                                   "cold": side("cold", k, ttft)}, rounds,
                                  report=lambda line, s=label: console.print(f"{s}: {line}"))
            prefix = "" if label == "short" else "long_"
            after = 1000 * sides["after_prefill"].latency_p50
            cold = 1000 * sides["cold"].latency_p50
            score = 1000 * statistics.median(scored[per_round:])  # measured rounds only
            figures[f"{prefix}prefill_score_ms"] = score
            figures[f"{prefix}small_ttft_after_prefill_ms"] = after
            figures[f"{prefix}small_ttft_cold_ms"] = cold
            figures[f"{prefix}small_ttft_after_prefill_ratio"] = after / cold
            figures[f"{prefix}score_then_answer_ratio"] = (score + after) / cold
            figures[f"{prefix}prefix_hit_share_after_prefill"] = statistics.mean(hits["after"])
            figures[f"{prefix}prefix_hit_share_cold"] = statistics.mean(hits["cold"])
            hits.clear()
        figures["prompts_per_side"] = rounds * per_round
        figures["enable_prefix_caching"] = bool(info and info.enable_prefix_caching)
    return figures


def main(quick: bool = False, as_json: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = terminate.run(_bench(quick))
    emit("cmesh bench prefill: Prefill, then the small tier's answer, A-B-B-A", figures,
         as_json)
