"""The gateway's transport-free vocabulary: a question, its answer events, and the
narrow Protocols the orchestrator calls (cache, classifier, one client per tier).

Nothing here imports grpc or nats, so the orchestrator runs over fakes of a few
lines in unit tests, as the backend's servicer runs over `FakeEngine`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from cache.keys import Scope
from core.errors import DeadlineExceeded, FieldError, Unavailable
from core.generation import (
    MAX_TEMPERATURE,
    Conversation,
    Delta,
    GenerationRequest,
    Sampling,
    Turn,
)

CacheStatus = Literal["hit", "miss", "skipped", "unavailable"]
ClassifierStatus = Literal["scored", "skipped", "unavailable"]

__all__ = ["Conversation", "DeadlineExceeded", "FieldError", "Sampling", "Scope", "Turn"]


class TierUnavailable(Unavailable):
    """A tier could not be reached (mapped to UNAVAILABLE); the message names the tier."""

    def __init__(self, tier: str, reason: str) -> None:
        super().__init__(f"tier {tier!r} unavailable: {reason}")
        self.tier = tier


@dataclass(frozen=True)
class Question:
    """One request as the orchestrator sees it; `tenant` comes from the API key only."""

    tenant: str
    prompt: str
    conversation: Conversation = field(default_factory=Conversation)
    sampling: Sampling = field(default_factory=Sampling)
    policy: str = ""
    thresholds: tuple[tuple[str, Any], ...] = ()
    force_tier: str = ""
    skip_cache: bool = False
    no_store: bool = False
    request_id: str = ""
    batch: bool = False  # a Batch API line: the broker's batch class, after interactive work

    @property
    def threshold_overrides(self) -> dict[str, Any]:
        return dict(self.thresholds)

    def scope(self) -> Scope:
        """The cache namespace: tenant, context, sampling, and a forced tier if any
        (an answer forced from one tier must not answer a request forced to another)."""
        policy = f"tier={self.force_tier}" if self.force_tier else ""
        return Scope(tenant=self.tenant, conversation=self.conversation,
                     sampling=self.sampling, policy=policy)

    def flight_key(self) -> tuple[Any, ...]:
        """Everything that makes two concurrent requests the same request."""
        return (self.tenant, self.prompt, self.conversation, self.sampling,
                self.policy, tuple(sorted(self.thresholds)), self.force_tier,
                self.skip_cache, self.no_store, self.batch)


@dataclass(frozen=True)
class Limits:
    """Bounds a question must respect; each violation names its field."""

    max_prompt_chars: int = 8_000
    max_context_chars: int = 32_000
    max_turns: int = 256
    max_tokens_limit: int = 1024
    max_stop: int = 8


TURN_CHARS = 16
"""What one earlier turn costs the context limit on top of its text: about the chat
template's role header and end marker (SmolLM2's `<|im_start|>user\n...<|im_end|>\n`
is 24 characters), so empty turns are not free."""
MAX_SEED = 2**64 - 1  # the wire's uint64


def check_question(q: Question, limits: Limits) -> None:
    """Raise `FieldError` for the first field of `q` outside `limits` (before any work)."""
    if not q.prompt.strip():
        raise FieldError("prompt", "must not be empty")
    if len(q.prompt) > limits.max_prompt_chars:
        raise FieldError("prompt", f"longer than {limits.max_prompt_chars} characters")
    conversation = q.conversation
    if len(conversation.turns) > limits.max_turns:
        raise FieldError("conversation.turns", f"more than {limits.max_turns} turns")
    context = len(conversation.system_prompt) + sum(len(t.content) + TURN_CHARS
                                                    for t in conversation.turns)
    if context > limits.max_context_chars:
        raise FieldError("conversation", f"longer than {limits.max_context_chars} characters "
                                         f"(each turn counts {TURN_CHARS} more than its text)")
    for i, turn in enumerate(conversation.turns):
        if turn.role not in ("user", "assistant"):
            raise FieldError(f"conversation.turns[{i}].role", "must be user or assistant")
    s = q.sampling
    if s.temperature is not None and not (math.isfinite(s.temperature)
                                          and 0 <= s.temperature <= MAX_TEMPERATURE):
        raise FieldError("sampling.temperature",
                         f"must be in [0, {MAX_TEMPERATURE:g}], got {s.temperature}")
    if s.top_p is not None and not (math.isfinite(s.top_p) and 0 < s.top_p <= 1):
        raise FieldError("sampling.top_p", f"must be in (0, 1], got {s.top_p}")
    if s.top_k is not None and s.top_k < -1:
        raise FieldError("sampling.top_k", f"must be -1, 0 or positive, got {s.top_k}")
    if s.seed is not None and not 0 <= s.seed <= MAX_SEED:
        raise FieldError("sampling.seed", f"must be in [0, 2**64 - 1], got {s.seed}")
    if s.max_tokens is not None and not 0 < s.max_tokens <= limits.max_tokens_limit:
        raise FieldError("sampling.max_tokens",
                         f"must be in [1, {limits.max_tokens_limit}], got {s.max_tokens}")
    if len(s.stop) > limits.max_stop:
        raise FieldError("sampling.stop", f"more than {limits.max_stop} stop strings")
    if any(not stop for stop in s.stop):
        raise FieldError("sampling.stop", "must not contain an empty string")


@dataclass(frozen=True)
class CacheLookup:
    """What a cache lookup found; `answer` is set on a hit only."""

    hit: bool
    similarity: float = 0.0
    probability: float = 0.0
    answer: str | None = None
    tier: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    vector: tuple[float, ...] = ()  # the prompt's embedding, when asked for
    # The entry a hit served, or a near-miss's best candidate: what an audit judges.
    entry_id: str = ""
    cached_prompt: str = ""
    # On a miss given prompts in flight: the index of the one whose answer this prompt
    # may share (-1: none); similarity and probability are then that pair's.
    in_flight: int = -1


@dataclass(frozen=True)
class TierCall:
    """One generation sent to one tier, and the little the gateway adds to it.

    The generation itself is a `core.generation.GenerationRequest`, the vocabulary
    the backend and the broker speak too (`services.common.convert` turns it into
    either's message), and a tier streams `core.generation.Delta`s back. The call
    holds the request rather than copying its fields; beside it travels only what
    routes the generation and that a generation does not have: the tenant (the
    broker's per-tenant share of a queue), the time the tier has left, and the
    broker's batch class (a Batch API line waits behind interactive work). The tier
    itself is the client's, so it is not repeated here.
    """

    request: GenerationRequest
    tenant: str
    timeout_s: float
    batch: bool = False


InFlight = tuple[str, tuple[float, ...]]  # a prompt being answered now, and its embedding


class CacheClient(Protocol):
    """The semantic cache, best-effort: the orchestrator treats any failure as a miss."""

    async def lookup(self, scope: Scope, prompt: str, timeout: float,
                     want_vector: bool = False,
                     in_flight: Sequence[InFlight] = ()) -> CacheLookup: ...

    async def store(self, scope: Scope, prompt: str, answer: str, tier: str,
                    prompt_tokens: int, completion_tokens: int, timeout: float) -> bool: ...


class ClassifierClient(Protocol):
    """P(the cheapest tier is not enough) for a prompt in its context."""

    async def score(self, scope: Scope, prompt: str, timeout: float,
                    vector: tuple[float, ...] = ()) -> float: ...


class TierClient(Protocol):
    """One tier: streams the deltas of a call; cancelling the iteration cancels it.

    A delta carries no time spent queued (the broker's `JobChunk` has no such field),
    so the orchestrator reports no `queue_ms`; one would come back as its own field
    of the job chunk, not as a gateway copy of `Delta`."""

    def generate(self, call: TierCall) -> AsyncIterator[Delta]: ...


@runtime_checkable
class AdmissionCheck(Protocol):
    """A tier that says, without taking a slot, whether it would refuse a call now
    (the error it would raise, or None)."""

    def refusal(self, call: TierCall) -> Exception | None: ...


@dataclass(frozen=True)
class TextDelta:
    """Text of the kept answer, in order."""

    text: str


@dataclass
class Metadata:
    """Everything a caller may want to know about how its answer was made."""

    request_id: str
    tier: str
    tiers_tried: list[str]
    policy: str
    cache_status: CacheStatus
    cache_similarity: float = 0.0
    cache_probability: float = 0.0
    classifier_status: ClassifierStatus = "skipped"
    classifier_score: float | None = None
    confidence: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    saving: float = 0.0
    finish_reason: str = "stop"
    coalesced: bool = False
    cache_stored: bool = False
    cache_store_reason: str = ""
    """Why the answer was not stored (empty when it was): see `store_refusal`."""
    region: str = ""
    """The region whose queue served the kept answer (empty without regions)."""
    failover_reason: str = ""
    """Each region passed over and why, when that was not the gateway's own."""
    latency_ms: dict[str, float] = field(default_factory=dict)


Event = TextDelta | Metadata


def prices_cover(prices: Mapping[str, float], tiers: list[str]) -> None:
    """Fail fast when a tier has no price (cost and saving would be silently wrong)."""
    if missing := [t for t in tiers if t not in prices]:
        raise ValueError(f"tier_prices: no price for tier {missing[0]!r}")
