"""`cmesh bench classifier`: the Score service against a raw MiniLM encode, one run.

- latency: one prompt per Score call over gRPC, against one raw
  `Embedder.encode([prompt])` in the same process (target ratio <= 1.2);
- throughput: many concurrent one-prompt Score calls (the micro-batcher
  joins them), against the raw batched encode rate of the same prompts
  (target ratio >= 0.8).

Both sides are warmed up alike and alternate A-B-B-A (`cmesh.bench.fair`),
so load from other processes hits both alike.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cmesh import terminate

_FALLBACK = [
    "What is the capital of France?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "Which of the following is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\nAnswer:",
    "Explain the difference between a process and a thread.",
]


def _prompts(n: int) -> list[str]:
    path = Path("data/routellm/gsm8k_responses.csv")
    prompts: list[str] = []
    if path.is_file():
        from cascade.data import read_csv

        prompts = read_csv(path).prompts[:n]
    while len(prompts) < n:
        prompts.extend(_FALLBACK)
    return prompts[:n]


async def _run(quick: bool) -> dict[str, float | int | str]:
    import grpc

    from cmesh.bench.fair import Sample, compare
    from core.embedder import Embedder
    from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
    from services.classifier.main import ClassifierNode
    from services.classifier.settings import ClassifierSettings

    rounds = 2 if quick else 4  # batched rounds
    single_rounds, per_round = (4, 4) if quick else (16, 4)  # short rounds: load swings less
    batch = 64 if quick else 256
    embedder = await asyncio.to_thread(Embedder)
    prompts = _prompts(max(per_round * single_rounds, batch))
    settings = ClassifierSettings(port=0, metrics_port=None)
    async with ClassifierNode(settings, embedder=embedder) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)

        async def score_one(text: str) -> None:
            await stub.Score(classifier_pb2.ScoreRequest(prompts=[text]))

        def chunk(r: int) -> list[str]:
            return prompts[max(r, 0) * per_round:(max(r, 0) + 1) * per_round]

        def raw_single(r: int) -> Sample:
            latencies = []
            for text in chunk(r):
                t0 = time.perf_counter()
                embedder.encode([text])
                latencies.append(time.perf_counter() - t0)
            return Sample(len(latencies), sum(latencies), latencies)

        async def service_single(r: int) -> Sample:
            latencies = []
            for text in chunk(r):
                t0 = time.perf_counter()
                await score_one(text)
                latencies.append(time.perf_counter() - t0)
            return Sample(len(latencies), sum(latencies), latencies)

        texts = prompts[:batch]

        def raw_batch(r: int) -> Sample:
            t0 = time.perf_counter()
            embedder.encode(texts)
            return Sample(batch, time.perf_counter() - t0)

        async def service_batch(r: int) -> Sample:
            t0 = time.perf_counter()
            await asyncio.gather(*(score_one(t) for t in texts))
            return Sample(batch, time.perf_counter() - t0)

        single = await compare({"raw": raw_single, "service": service_single}, single_rounds)
        batched = await compare({"raw": raw_batch, "service": service_batch}, rounds)
        name = node.classifier.name if node.classifier else "?"
    raw_p50 = 1000 * single["raw"].latency_p50
    svc_p50 = 1000 * single["service"].latency_p50
    raw_rate, svc_rate = batched["raw"].rate, batched["service"].rate
    return {
        "classifier": name,
        "single_calls": single_rounds * per_round,
        "raw_encode_ms_p50": raw_p50,
        "score_ms_p50": svc_p50,
        "latency_ratio": svc_p50 / raw_p50,
        "latency_target_max": 1.2,
        "batch_prompts": batch,
        "raw_encode_per_s": raw_rate,
        "scores_per_s": svc_rate,
        "throughput_ratio": svc_rate / raw_rate,
        "throughput_target_min": 0.8,
    }


def main(quick: bool, as_json: bool) -> None:
    """Run the benchmark once and print its figures."""
    import os

    from cmesh.output import emit

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = terminate.run(_run(quick))
    emit("cmesh bench classifier", figures, as_json)
