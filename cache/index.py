"""Nearest-neighbour search over one namespace's prompt embeddings (FAISS).

Small namespaces use an exact inner-product index (on unit vectors that is
cosine similarity); past `hnsw_from` entries the index is rebuilt as HNSW,
which keeps lookups sub-millisecond at 100k entries. HNSW cannot delete, so
removals are tombstones filtered at query time, and the index is rebuilt once
they make up a quarter of it. Where faiss was built with GPU support and a GPU
is visible, exact indices live on the GPU.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import faiss
import numpy as np


@lru_cache(maxsize=1)
def _gpu_resources() -> Any:
    """faiss.StandardGpuResources, or None without a GPU build and a GPU."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    return faiss.StandardGpuResources()


@lru_cache(maxsize=1)
def _single_thread() -> None:
    # One query at a time is the serving pattern; FAISS's OpenMP threads spin
    # for work on a shared machine and made a 10k exact search 20x slower here.
    faiss.omp_set_num_threads(1)


def gpu_available() -> bool:
    """Whether FAISS can place indices on a GPU here."""
    return _gpu_resources() is not None


class VectorIndex:
    """Unit vectors keyed by integer id; `search` returns (id, cosine) best first."""

    def __init__(self, dim: int, hnsw_from: int = 20_000, hnsw_m: int = 32,
                 ef_search: int = 64, use_gpu: bool = True) -> None:
        self.dim = dim
        self.hnsw_from = hnsw_from
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.use_gpu = use_gpu and gpu_available()
        _single_thread()
        self._vectors: dict[int, np.ndarray] = {}
        self._dead: set[int] = set()
        self._index: Any = self._new_flat()
        self._hnsw = False

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def kind(self) -> str:
        """'hnsw' or 'flat' (plus '-gpu' when on the GPU)."""
        return "hnsw" if self._hnsw else ("flat-gpu" if self.use_gpu else "flat")

    def _new_flat(self) -> Any:
        if self.use_gpu:
            return faiss.IndexIDMap(faiss.GpuIndexFlatIP(_gpu_resources(), self.dim))
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_hnsw(self) -> Any:
        hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = self.ef_search
        hnsw.hnsw.efConstruction = 40
        return faiss.IndexIDMap2(hnsw)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add unit vectors (n, dim) under int64 `ids` (ids must be new)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        for i, v in zip(ids.tolist(), vectors, strict=True):
            self._vectors[i] = v
            self._dead.discard(i)
        if not self._hnsw and len(self._vectors) >= self.hnsw_from:
            self._rebuild(hnsw=True)
        else:
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: list[int]) -> None:
        """Forget `ids` (unknown ids are ignored)."""
        gone = [i for i in ids if self._vectors.pop(i, None) is not None]
        if not gone:
            return
        if self._hnsw:
            self._dead.update(gone)
            if len(self._dead) * 4 > len(self._vectors) + len(self._dead):
                self._rebuild(hnsw=len(self._vectors) >= self.hnsw_from // 2)
        elif self.use_gpu:
            self._rebuild(hnsw=False)
        else:
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))

    def _rebuild(self, hnsw: bool) -> None:
        self._hnsw = hnsw
        self._dead.clear()
        self._index = self._new_hnsw() if hnsw else self._new_flat()
        if self._vectors:
            ids = np.fromiter(self._vectors.keys(), dtype=np.int64, count=len(self._vectors))
            self._index.add_with_ids(np.stack(list(self._vectors.values())), ids)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The `k` nearest live ids to one unit `query` vector, most similar first."""
        return self.search_many(query.reshape(1, -1), k)[0]

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """`search` for each row of `queries`."""
        if not self._vectors:
            return [[] for _ in range(len(queries))]
        want = min(k + len(self._dead), len(self._vectors) + len(self._dead))
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        out = []
        for row_ids, row_sims in zip(ids, sims, strict=True):
            hits = [(int(i), float(s)) for i, s in zip(row_ids, row_sims, strict=True)
                    if i >= 0 and int(i) not in self._dead]
            out.append(hits[:k])
        return out
