"""Cache test fixtures: one real embedder and one verifier per session, real NATS per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from cache.core import CacheConfig, CacheParts, EntryLog, EventSink, SemanticCache
from cache.verifier import CrossVerifier
from core.embedder import Embedder
from services.common.natsd import NatsServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MakeCache = Callable[..., SemanticCache]

# The shipped table (hand-written and mock calibration halves) certifies few
# paraphrase hits below δ = 0.1 (docs/cache.md); tests that need paraphrase
# hits run at 0.15, where the hand-written evaluation half hits 83 % of its
# paraphrases. Look-alike misses are tested at 0.05 and at this looser δ.
PARAPHRASE_DELTA = 0.15


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def verifier() -> CrossVerifier:
    return CrossVerifier.load()


@pytest.fixture(scope="session")
def embedding_memo() -> dict[str, np.ndarray]:
    """Real MiniLM vectors by text: replica tests embed one small pool many times."""
    return {}


@pytest.fixture
def make_cache(embedder: Embedder, verifier: CrossVerifier,
               embedding_memo: dict[str, np.ndarray]) -> MakeCache:
    """Build a cache on the real embedder and verifier; keyword overrides of CacheConfig."""
    memo = embedding_memo

    async def embed(text: str) -> np.ndarray:
        if text not in memo:
            memo[text] = embedder.encode([text])[0]
        return memo[text]

    def build(log: Callable[[EventSink], EntryLog] | None = None,
              clock: Callable[[], float] | None = None, **config: object) -> SemanticCache:
        """`log`, if given, makes the event log on the replica's ordering state."""
        cfg = CacheConfig(**{"use_gpu": False, "delta": PARAPHRASE_DELTA, **config})  # type: ignore[arg-type]
        kwargs = {"clock": clock} if clock is not None else {}
        parts = CacheParts.build(verifier, embedder.dim, cfg, **kwargs)
        return SemanticCache(embed, parts, None if log is None else log(parts.replica))

    return build


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server
