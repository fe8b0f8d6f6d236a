"""`cmesh bench cache`: the hit path against the encoder it is built on, in one run.

Entries: the 999 GPTCache origins (real embeddings) plus, for the FAISS
figure, perturbed copies of them up to 100k (v + noise, renormalised), which
keep the clustered geometry of real prompts without embedding 100k texts.
Queries are the paraphrases ("similar"), which should hit their origin; the
cache runs at δ = 0.05 on the shipped table. Every ratio is measured in this
run against the raw MiniLM encode of the same runtime, and raw and cache runs
alternate A-B-B-A after a warm-up, so load from other processes hits both
alike:

- `service_vs_encode`: hits/s through gRPC at concurrency 32 / raw batched
  encode rate (sentences/s, batches of 32); target >= 0.8;
- `batched_vs_encode`: micro-batched in-process hits/s at concurrency 32 /
  the same raw rate; target >= 0.8;
- `lookup_vs_encode`: lookup p50 with verification, one query alone / one
  raw encode p50; target <= 1.5;
- `faiss_100k_p50_ms`: FAISS search alone at 100k entries (HNSW).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cache.core import CacheConfig, SemanticCache
from cache.entries import Entry
from cache.index import VectorIndex
from cache.keys import Sampling, Scope
from cache.lookup import LookupWorker
from cache.pairs import load_pairs
from cache.verifier import CrossVerifier
from core.embedder import Embedder

DATA = Path(__file__).resolve().parents[2] / "data" / "gptcache" / "mock_data.json"
SCOPE = Scope(tenant="bench", sampling=Sampling(temperature=0.0))
DELTA = 0.05
CONCURRENCY = 32


def _filled(embedder: Embedder, verifier: CrossVerifier, origins: list[str],
            vecs: np.ndarray) -> SemanticCache:
    async def embed(text: str) -> np.ndarray:
        return embedder.encode([text])[0]

    cache = SemanticCache(embed, verifier, embedder.dim,
                          CacheConfig(delta=DELTA, use_gpu=False,
                                      max_entries_per_namespace=len(origins) + 1))
    ns = cache.namespace(SCOPE)
    now = time.time()
    for i, (text, v) in enumerate(zip(origins, vecs, strict=True)):
        cache.put(Entry(id=f"e{i}", namespace=ns, tenant="bench", prompt=text, answer=text,
                        vector=v, created=now, last_hit=now))
    return cache


def _p(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def _faiss_100k(vecs: np.ndarray, queries: np.ndarray, size: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    index = VectorIndex(vecs.shape[1], hnsw_from=20_000, use_gpu=False)
    reps = -(-size // len(vecs))
    big = np.tile(vecs, (reps, 1))[:size]
    big = big + rng.normal(scale=0.35 / np.sqrt(vecs.shape[1]), size=big.shape)
    big = (big / np.linalg.norm(big, axis=1, keepdims=True)).astype(np.float32)
    index.add(np.arange(size), big)
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, 4)
        times.append(time.perf_counter() - t)
    k = f"{size // 1000}k"
    return {f"faiss_{k}_p50_ms": _p(times, 50), f"faiss_{k}_p99_ms": _p(times, 99),
            f"faiss_{k}_index": index.kind}


def _encode_rate(embedder: Embedder, texts: list[str]) -> float:
    t = time.perf_counter()
    embedder.encode(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - t)


async def _concurrent(call: Callable[[str], Any], queries: list[str],
                      seconds: float) -> tuple[float, float]:
    """(hits/s, lookups/s) of `CONCURRENCY` workers calling `call` for `seconds`."""
    hits = done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal hits, done
        i = offset
        while time.perf_counter() < stop:
            hits += bool(await call(queries[i % len(queries)]))
            done += 1
            i += CONCURRENCY

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    took = time.perf_counter() - start
    return hits / took, done / took


async def _batched(cache: SemanticCache, embedder: Embedder, queries: list[str],
                   seconds: float) -> tuple[float, float]:
    async with LookupWorker(cache, lambda t: embedder.encode(t, batch_size=max(len(t), 1))):
        async def call(q: str) -> bool:
            return (await cache.lookup(SCOPE, q)).hit

        await _concurrent(call, queries, 0.5)  # warm-up
        return await _concurrent(call, queries, seconds)


async def _service(embedder: Embedder, verifier: CrossVerifier, origins: list[str],
                   queries: list[str], seconds: float) -> tuple[float, float]:
    import grpc

    from protos.cache.v1 import cache_pb2, cache_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.cache.main import CacheNode
    from services.cache.settings import CacheSettings

    scope = cache_pb2.Scope(tenant="bench", sampling=common_pb2.SamplingParams(temperature=0))
    async with (CacheNode(CacheSettings(port=0, delta=DELTA, use_gpu=False), embedder,
                          verifier) as node,
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel):
        stub = cache_pb2_grpc.CacheStub(channel)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def store(p: str) -> None:
            async with sem:
                await stub.Store(cache_pb2.StoreRequest(scope=scope, prompt=p, answer=p))

        await asyncio.gather(*(store(p) for p in origins))

        async def call(q: str) -> bool:
            return (await stub.Lookup(cache_pb2.LookupRequest(scope=scope, prompt=q))).hit

        await _concurrent(call, queries, 0.5)  # warm-up
        return await _concurrent(call, queries, seconds)


def main(quick: bool = False, as_json: bool = False) -> None:
    """Run every scenario once and print the figures."""
    from cmesh.output import emit

    pairs = load_pairs(DATA)
    origins, queries = sorted({p.a for p in pairs}), [p.b for p in pairs]
    embedder, verifier = Embedder(), CrossVerifier.load(threads=2)
    vecs = embedder.encode(origins, batch_size=64)
    n_single = 40 if quick else 200
    seconds = 4.0 if quick else 15.0
    sample = queries[: 256 if quick else 1024]
    figures: dict[str, Any] = _faiss_100k(vecs, embedder.encode(queries[:n_single]),
                                          30_000 if quick else 100_000)
    cache = _filled(embedder, verifier, origins, vecs)
    ns = cache.namespace(SCOPE)
    _encode_rate(embedder, sample[:64])  # warm-up
    enc_single, lookup_single = [], []
    for text in queries[:n_single]:  # alternate one raw encode, one full lookup
        t = time.perf_counter()
        embedder.encode([text])
        enc_single.append(time.perf_counter() - t)
        t = time.perf_counter()
        cache.lookup_vectors(ns, [text], embedder.encode([text]))
        lookup_single.append(time.perf_counter() - t)
    # A-B-B-A: raw rate, batched, service, raw rate
    raw1 = _encode_rate(embedder, sample)
    batched, batched_lookups = asyncio.run(_batched(cache, embedder, queries, seconds))
    service, service_lookups = asyncio.run(_service(embedder, verifier, origins, queries,
                                                    seconds))
    raw = (raw1 + _encode_rate(embedder, sample)) / 2
    figures |= {
        "raw_encode_per_s_b32": raw, "encode_p50_ms": _p(enc_single, 50),
        "lookup_p50_ms": _p(lookup_single, 50), "lookup_p99_ms": _p(lookup_single, 99),
        "lookup_vs_encode": _p(lookup_single, 50) / _p(enc_single, 50),
        "batched_hits_per_s_c32": batched, "batched_lookups_per_s_c32": batched_lookups,
        "batched_vs_encode": batched / raw,
        "service_hits_per_s_c32": service, "service_lookups_per_s_c32": service_lookups,
        "service_vs_encode": service / raw, "delta": DELTA,
    }
    emit("bench cache" + (" (quick)" if quick else ""), figures, as_json)
