"""`cmesh bench cache`: the hit path against the encoder it is built on, in one run.

Entries: the GPTCache origins (999; 256 with --quick; real embeddings) plus, for the FAISS
figure, perturbed copies of them up to 100k (v + noise, renormalised), which
keep the clustered geometry of real prompts without embedding 100k texts.
Queries are the paraphrases ("similar"), which should hit their origin; the
cache runs at δ = 0.15 on the shipped table, where about half of them hit
(at δ 0.05 about one in six does, and hits/s would mostly measure the
verifier's strictness). Lookups/s and the hit share are reported beside
hits/s. Every ratio is measured in this
run against the raw MiniLM encode of the same runtime, and raw and cache runs
alternate A-B-B-A after a warm-up (`cmesh.bench.fair`), so load from other
processes hits both alike:

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
import sys
import time
from collections.abc import Awaitable, Callable
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
from cmesh.bench.fair import Sample, compare
from core.embedder import Embedder

DATA = Path(__file__).resolve().parents[2] / "data" / "gptcache" / "mock_data.json"
SCOPE = Scope(tenant="bench", sampling=Sampling(temperature=0.0))
DELTA = 0.15
CONCURRENCY = 32
THREADS = 2  # math threads of every side: the raw encode's (all cores here)


def _filled(embedder: Embedder, verifier: CrossVerifier, origins: list[str],
            vecs: np.ndarray) -> SemanticCache:
    async def embed(text: str) -> np.ndarray:
        return embedder.encode([text])[0]

    cache = SemanticCache.build(embed, verifier, embedder.dim,
                                CacheConfig(delta=DELTA, use_gpu=False,
                                            max_entries_per_namespace=len(origins) + 1))
    ns = cache.namespace(SCOPE)
    now = time.time()
    for i, (text, v) in enumerate(zip(origins, vecs, strict=True)):
        cache.put(Entry(id=f"e{i}", namespace=ns, tenant="bench", prompt=text, answer=text,
                        vector=v, created=now, last_hit=now))
    return cache


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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


def _texts(queries: list[str], round_: int, n: int) -> list[str]:
    start = (round_ % 7) * n % len(queries)
    return (queries[start:] + queries[:start])[:n]


async def _concurrent(call: Callable[[str], Awaitable[bool]], queries: list[str],
                      seconds: float, hits: list[int]) -> Sample:
    """`CONCURRENCY` workers calling `call` for `seconds`; work = lookups answered (the
    hits among them are added to `hits`, so hits/s = lookups/s x hit share)."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            hit = bool(await call(queries[i % len(queries)]))  # await first: no lost update
            hits[0] += hit
            hits[1] += 1
            done += 1
            i += CONCURRENCY

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    return Sample(work=done, seconds=time.perf_counter() - start)


async def _throughput(embedder: Embedder, verifier: CrossVerifier, origins: list[str],
                      vecs: np.ndarray, queries: list[str], quick: bool) -> dict[str, Any]:
    """Raw batched encode, micro-batched in-process hits, gRPC hits: A-B-C-C-B-A rounds."""
    import grpc

    from protos.cache.v1 import cache_pb2, cache_pb2_grpc
    from protos.common.v1 import common_pb2
    from services.cache.main import CacheNode
    from services.cache.settings import CacheSettings

    seconds, n_raw = (3.0, 192) if quick else (10.0, 640)
    cache = _filled(embedder, verifier, origins, vecs)
    scope = cache_pb2.Scope(tenant="bench", sampling=common_pb2.SamplingParams(temperature=0))

    def encode(round_: int) -> Sample:
        texts = _texts(queries, round_, n_raw)
        t = time.perf_counter()
        embedder.encode(texts, batch_size=32)
        return Sample(work=len(texts), seconds=time.perf_counter() - t)

    async def in_process(q: str) -> bool:
        return (await cache.lookup(SCOPE, q)).hit

    async with (LookupWorker(cache, embedder.encode_requests, threads=THREADS),
                # the node's math threads as the raw encode's (the service's default of
                # one is for a node beside vLLM on two cores)
                CacheNode(CacheSettings(port=0, delta=DELTA, use_gpu=False,
                                        lookup_threads=THREADS), embedder, verifier) as node,
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel):
        stub = cache_pb2_grpc.CacheStub(channel)
        for p in origins:
            await stub.Store(cache_pb2.StoreRequest(scope=scope, prompt=p, answer=p))

        async def service(q: str) -> bool:
            return (await stub.Lookup(cache_pb2.LookupRequest(scope=scope, prompt=q))).hit

        hits = {"batched": [0, 0], "service": [0, 0]}
        sides = await compare({
            "encode": encode,
            "batched": lambda r: _concurrent(in_process, queries, seconds if r >= 0 else 1.0,
                                             hits["batched"]),
            "service": lambda r: _concurrent(service, queries, seconds if r >= 0 else 1.0,
                                             hits["service"]),
        }, rounds=2, report=_progress)
    raw = sides["encode"].rate
    out: dict[str, Any] = {"raw_encode_per_s_b32": raw}
    for name in ("batched", "service"):
        share = hits[name][0] / max(hits[name][1], 1)
        out |= {f"{name}_lookups_per_s_c32": sides[name].rate, f"{name}_hit_share": share,
                f"{name}_hits_per_s_c32": sides[name].rate * share,
                f"{name}_lookups_vs_encode": sides[name].rate / raw,
                f"{name}_vs_encode": sides[name].rate * share / raw}
    return out


async def _latency(embedder: Embedder, cache: SemanticCache, queries: list[str],
                   n: int) -> dict[str, Any]:
    """One raw encode against one full lookup (embed, search, verify), one query alone."""
    ns = cache.namespace(SCOPE)

    def one(fn: Callable[[str], object]) -> Callable[[int], Sample]:
        def run(round_: int) -> Sample:
            lat = []
            for text in _texts(queries, round_, n if round_ >= 0 else 5):
                t = time.perf_counter()
                fn(text)
                lat.append(time.perf_counter() - t)
            return Sample(work=len(lat), seconds=sum(lat), latencies=lat)
        return run

    sides = await compare({
        "encode": one(lambda t: embedder.encode([t])),
        "lookup": one(lambda t: cache.lookup_vectors(ns, [t], embedder.encode([t]))),
    }, rounds=2, report=_progress)
    enc, look = sides["encode"], sides["lookup"]
    lat = sorted(x for s in look.samples for x in s.latencies)
    return {"encode_p50_ms": enc.latency_p50 * 1000, "lookup_p50_ms": look.latency_p50 * 1000,
            "lookup_p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "lookup_vs_encode": look.latency_p50 / enc.latency_p50}


def main(quick: bool = False, as_json: bool = False) -> None:
    """Run every scenario once and print the figures."""
    from cmesh.output import emit

    pairs = load_pairs(DATA)[: 256 if quick else None]
    origins, queries = sorted({p.a for p in pairs}), [p.b for p in pairs]
    embedder, verifier = Embedder(), CrossVerifier.load(threads=THREADS)
    vecs = embedder.encode(origins, batch_size=64)
    n_single = 30 if quick else 100
    _progress(f"{len(origins)} entries embedded; FAISS at 100k")
    figures: dict[str, Any] = _faiss_100k(vecs, embedder.encode(queries[:n_single]),
                                          20_000 if quick else 100_000)
    cache = _filled(embedder, verifier, origins, vecs)
    figures |= asyncio.run(_latency(embedder, cache, queries, n_single))
    figures |= asyncio.run(_throughput(embedder, verifier, origins, vecs, queries, quick))
    figures["delta"] = DELTA
    emit("bench cache" + (" (quick)" if quick else ""), figures, as_json)
