"""Fakes of the orchestrator's clients, a few lines each (unit tests only)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from cache.keys import Scope, fingerprint
from core.generation import Delta, TokenLogprob
from services.gateway.domain import CacheLookup, InFlight, TierCall, TierUnavailable


@dataclass
class FakeCache:
    """Exact-match cache per namespace; `broken` makes every call fail."""

    entries: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    broken: bool = False
    delay: float = 0.0
    store_delay: float = 0.0
    lookups: int = 0
    stores: int = 0
    # Prompts in flight: a miss matches the first one whose text, `same_prefix` removed,
    # is the asked prompt's (None: never matches); every lookup's offer is kept.
    same_prefix: str | None = None
    offered: list[list[str]] = field(default_factory=list)

    async def lookup(self, scope: Scope, prompt: str, timeout: float,
                     want_vector: bool = False,
                     in_flight: Sequence[InFlight] = ()) -> CacheLookup:
        self.lookups += 1
        self.offered.append([p for p, _ in in_flight])
        await asyncio.sleep(self.delay)
        if self.broken:
            raise ConnectionError("cache down")
        found = self.entries.get((scope.tenant, fingerprint(scope), prompt))
        if found is None:
            bare = prompt.removeprefix(self.same_prefix or "")
            match = next((i for i, (p, _) in enumerate(in_flight)
                          if self.same_prefix is not None
                          and p.removeprefix(self.same_prefix) == bare), -1)
            return CacheLookup(hit=False, similarity=0.3, probability=0.1,
                               vector=(0.5, 0.5) if want_vector else (), in_flight=match)
        return CacheLookup(hit=True, similarity=1.0, probability=0.99, answer=found[0],
                           tier=found[1], prompt_tokens=5, completion_tokens=7)

    async def store(self, scope: Scope, prompt: str, answer: str, tier: str,
                    prompt_tokens: int, completion_tokens: int, timeout: float) -> bool:
        await asyncio.sleep(self.store_delay)
        if self.broken:
            raise ConnectionError("cache down")
        self.stores += 1
        self.entries[(scope.tenant, fingerprint(scope), prompt)] = (answer, tier)
        return True


@dataclass
class FakeClassifier:
    """Scores "hard" prompts high and everything else low."""

    broken: bool = False
    calls: int = 0
    given_vectors: int = 0
    delay: float = 0.0

    async def score(self, scope: Scope, prompt: str, timeout: float,
                    vector: tuple[float, ...] = ()) -> float:
        self.calls += 1
        self.given_vectors += bool(vector)
        await asyncio.sleep(self.delay)
        if self.broken:
            raise ConnectionError("classifier down")
        return 0.9 if "hard" in prompt else 0.1


@dataclass
class FakeTier:
    """Answers "<name>: <prompt>" in words with a fixed per-token probability."""

    name: str
    probability: float = 0.9
    delay: float = 0.0
    down: bool = False
    finish: str = "stop"
    calls: int = 0
    cancelled: int = 0
    sent: list[TierCall] = field(default_factory=list)

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        self.calls += 1
        self.sent.append(call)
        if self.down:
            raise TierUnavailable(self.name, "connection refused")
        words = f"{self.name}: {call.request.prompt}".split()
        lp = math.log(self.probability)
        done = len(call.request.continue_token_ids)  # a continuation skips what was made
        try:
            for i, word in enumerate(words[done:], start=done):
                await asyncio.sleep(self.delay)
                yield Delta(word + " ", [i], [TokenLogprob(i, word, lp)])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield Delta(finish_reason=self.finish, prompt_tokens=10, completion_tokens=len(words))
