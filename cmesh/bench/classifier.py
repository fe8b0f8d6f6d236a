"""`cmesh bench classifier`: the Score service against a raw MiniLM encode, one run.

- latency: one prompt per Score call over gRPC, against one raw
  `Embedder.encode([prompt])` in the same process (target ratio <= 1.2);
- throughput: many concurrent one-prompt Score calls (the micro-batcher
  joins them), against the raw batched encode rate of the same prompts
  (target ratio >= 0.8).

Raw and service runs alternate, so load from other processes hits both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

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

    from core.embedder import Embedder
    from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
    from services.classifier.main import ClassifierNode
    from services.classifier.settings import ClassifierSettings

    singles = 15 if quick else 60
    batch = 64 if quick else 256
    rounds = 2 if quick else 3
    embedder = await asyncio.to_thread(Embedder)
    prompts = _prompts(max(singles, batch))
    settings = ClassifierSettings(port=0, metrics_port=None)
    async with ClassifierNode(settings, embedder=embedder) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)

        async def score_one(text: str) -> None:
            await stub.Score(classifier_pb2.ScoreRequest(prompts=[text]))

        for text in prompts[:4]:
            await score_one(text)
            embedder.encode([text])
        raw_ms: list[float] = []
        svc_ms: list[float] = []
        for text in prompts[:singles]:
            t0 = time.perf_counter()
            embedder.encode([text])
            raw_ms.append(1000 * (time.perf_counter() - t0))
            t0 = time.perf_counter()
            await score_one(text)
            svc_ms.append(1000 * (time.perf_counter() - t0))
        raw_rate: list[float] = []
        svc_rate: list[float] = []
        texts = prompts[:batch]
        for _ in range(rounds):
            t0 = time.perf_counter()
            embedder.encode(texts)
            raw_rate.append(batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            await asyncio.gather(*(score_one(t) for t in texts))
            svc_rate.append(batch / (time.perf_counter() - t0))
        name = node.classifier.name if node.classifier else "?"
    raw_p50, svc_p50 = statistics.median(raw_ms), statistics.median(svc_ms)
    raw_best, svc_best = max(raw_rate), max(svc_rate)
    return {
        "classifier": name,
        "single_calls": singles,
        "raw_encode_ms_p50": raw_p50,
        "score_ms_p50": svc_p50,
        "latency_ratio": svc_p50 / raw_p50,
        "latency_target_max": 1.2,
        "batch_prompts": batch,
        "raw_encode_per_s": raw_best,
        "scores_per_s": svc_best,
        "throughput_ratio": svc_best / raw_best,
        "throughput_target_min": 0.8,
    }


def main(quick: bool, as_json: bool) -> None:
    """Run the benchmark once and print its figures."""
    import os

    from cmesh.output import emit

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = asyncio.run(_run(quick))
    emit("cmesh bench classifier", figures, as_json)
