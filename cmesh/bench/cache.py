"""`cmesh bench cache`: lookup latency, micro-batching gain, service rate vs raw encode.

Entries: the 999 GPTCache origins (real embeddings) plus, up to the target
size, perturbed copies of them (v + noise, renormalised). The copies keep the
clustered geometry of real prompts, so the index does realistic work, without
embedding 100k texts first. Queries are the paraphrases ("similar"), which
should hit their origin. The cache runs at δ = 0.25, where the shipped QQP
calibration certifies paraphrase hits (at stricter δ only exact repeats hit,
and hits per second would measure misses).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np

from cache.core import CacheConfig, SemanticCache
from cache.entries import Entry
from cache.keys import Sampling, Scope
from cache.pairs import load_pairs
from cache.verifier import FeatureVerifier
from core.batcher import BatchedEmbedder
from core.embedder import Embedder

DATA = Path(__file__).resolve().parents[2] / "data" / "gptcache" / "mock_data.json"
SCOPE = Scope(tenant="bench", sampling=Sampling(temperature=0.0))
DELTA = 0.25


def _filled(embedder: Embedder, verifier: FeatureVerifier, origins: list[str],
            vecs: np.ndarray, size: int, embed: Any = None) -> SemanticCache:
    async def no_embed(_: str) -> np.ndarray:
        raise RuntimeError("no embedder in this scenario")

    cache = SemanticCache(embed or no_embed, verifier, embedder.dim,
                          CacheConfig(delta=DELTA, max_entries_per_namespace=size + 1))
    ns = cache.namespace(SCOPE)
    rng = np.random.default_rng(0)
    now = time.time()
    for i in range(size):
        j = i % len(origins)
        v = vecs[j]
        if i >= len(origins):
            v = v + rng.normal(scale=0.35 / np.sqrt(len(v)), size=len(v)).astype(np.float32)
            v = (v / np.linalg.norm(v)).astype(np.float32)
        cache.put(Entry(id=f"e{i}", namespace=ns, tenant="bench", prompt=origins[j],
                        answer=origins[j], vector=v, created=now, last_hit=now))
    return cache


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def _latency(embedder: Embedder, verifier: FeatureVerifier, origins: list[str],
             vecs: np.ndarray, queries: list[str], qvecs: np.ndarray, size: int) -> dict:
    cache = _filled(embedder, verifier, origins, vecs, size)
    ns = cache.namespace(SCOPE)
    raw, full = [], []
    for text, qv in zip(queries, qvecs, strict=True):
        t = time.perf_counter()
        cache.lookup_vectors(ns, [text], qv.reshape(1, -1))
        raw.append(time.perf_counter() - t)
    for text in queries:
        t = time.perf_counter()
        qv = embedder.encode([text])
        cache.lookup_vectors(ns, [text], qv)
        full.append(time.perf_counter() - t)
    k = f"{size // 1000}k"
    return {f"lookup_{k}_no_embed_p50_ms": _pct(raw, 50),
            f"lookup_{k}_no_embed_p99_ms": _pct(raw, 99),
            f"lookup_{k}_embed_p50_ms": _pct(full, 50),
            f"lookup_{k}_embed_p99_ms": _pct(full, 99),
            f"index_{k}": cache.index_kind(ns)}


async def _hits_per_s(embedder: Embedder, verifier: FeatureVerifier, origins: list[str],
                      vecs: np.ndarray, queries: list[str], max_batch: int,
                      seconds: float, concurrency: int = 32) -> float:
    async with BatchedEmbedder(embedder, max_batch=max_batch, max_wait=0.005) as batched:
        cache = _filled(embedder, verifier, origins, vecs, len(origins), batched.encode_one)
        hits = 0
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal hits
            i = offset
            while time.perf_counter() < stop:
                result = await cache.lookup(SCOPE, queries[i % len(queries)])
                hits += result.hit
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return hits / (time.perf_counter() - start)


async def _service_hits_per_s(embedder: Embedder, verifier: FeatureVerifier,
                              origins: list[str], answers: list[str], queries: list[str],
                              seconds: float, concurrency: int = 32) -> float:
    import grpc

    from protos.cache.v1 import cache_pb2, cache_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.cache.main import CacheNode
    from services.cache.settings import CacheSettings

    scope = cache_pb2.Scope(tenant="bench", sampling=common_pb2.SamplingParams(temperature=0))
    async with (CacheNode(CacheSettings(port=0, delta=DELTA), embedder, verifier) as node,
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel):
        stub = cache_pb2_grpc.CacheStub(channel)
        sem = asyncio.Semaphore(concurrency)

        async def store(p: str, a: str) -> None:
            async with sem:
                await stub.Store(cache_pb2.StoreRequest(scope=scope, prompt=p, answer=a))

        await asyncio.gather(*(store(p, a) for p, a in zip(origins, answers, strict=True)))
        hits = 0
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal hits
            i = offset
            while time.perf_counter() < stop:
                q = queries[i % len(queries)]
                reply = await stub.Lookup(cache_pb2.LookupRequest(scope=scope, prompt=q))
                hits += reply.hit
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return hits / (time.perf_counter() - start)


def main(quick: bool = False, as_json: bool = False) -> None:
    """Run every scenario once and print the figures."""
    from cmesh.output import emit

    pairs = load_pairs(DATA)
    origins, queries = [p.a for p in pairs], [p.b for p in pairs]
    embedder, verifier = Embedder(), FeatureVerifier.load()
    vecs = embedder.encode(origins, batch_size=64)
    n_q = 64 if quick else 300
    qvecs = embedder.encode(queries[:n_q], batch_size=64)
    figures: dict[str, Any] = {}
    for size in ((10_000, 30_000) if quick else (10_000, 100_000)):
        figures |= _latency(embedder, verifier, origins, vecs, queries[:n_q], qvecs, size)
    seconds = 4.0 if quick else 15.0
    batched = asyncio.run(_hits_per_s(embedder, verifier, origins, vecs, queries, 32, seconds))
    single = asyncio.run(_hits_per_s(embedder, verifier, origins, vecs, queries, 1, seconds))
    figures |= {"hits_per_s_c32_batched": batched, "hits_per_s_c32_batch1": single,
                "batching_ratio": batched / single if single else 0.0}
    sample = queries[: 512 if quick else 2048]
    t = time.perf_counter()
    embedder.encode(sample, batch_size=32)
    raw = len(sample) / (time.perf_counter() - t)
    service = asyncio.run(_service_hits_per_s(embedder, verifier, origins, origins, queries,
                                              seconds))
    figures |= {"raw_encode_per_s_b32": raw, "service_hits_per_s_c32": service,
                "service_vs_raw_ratio": service / raw}
    emit("bench cache" + (" (quick)" if quick else ""), figures, as_json)
