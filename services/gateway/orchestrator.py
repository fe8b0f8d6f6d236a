"""The cascade orchestrator: cache -> classifier -> policy -> tier(s) -> cache, as events.

    orchestrator = Orchestrator(policy, cache, classifier, {"small": c1, "large": c2}, config)
    async for event in orchestrator.ask(question, timeout_s=30):
        ...  # TextDelta(s) of the kept answer, then one Metadata

Transport-free: the servicer translates protobuf to a `Question` and these
events back. The cache and the classifier are side calls: a failure or a
timeout is a miss (counted through `Observer`), never a failed request. Only
the tiers can fail a request: a dead tier is `TierUnavailable` naming it.

Streaming: a tier whose answer cannot be escalated (route, forced tier, the
last tier, or a hybrid prompt sent straight to an end) streams token by token.

Speculation (`speculate`): under the route policy the first tier's call starts
as soon as the cache has missed, while the classifier scores; when the score
routes there its tokens are already on their way, and when it routes elsewhere
the call is cancelled (its broker job aborted) before any of it reached the
client. The score then costs the answer almost nothing on the prompts that stay
small, for a cancelled call's prefill on the others.
A tier whose answer may still be replaced by the next tier's is buffered until
its confidence is known, then sent in one delta if it is kept; the client never
sees text of an answer that was dropped.

Answers in flight (`join_in_flight`): a miss brings the cache the prompts of its
scope this gateway is answering now; when the cache's verifier says the new
prompt asks the same thing as one of them (the test a hit passes), the request
follows that flight's answer as it streams, a hit that needs no generation of
its own, instead of generating the same answer a second time because the first
asking has not finished yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from cache.keys import fingerprint
from cascade.confidence import ConfidenceMethod, confidence
from cascade.policy import Policy
from cascade.thresholds import ThresholdError
from core.generation import GenerationRequest
from services.gateway.audit import Auditor
from services.gateway.domain import (
    AdmissionCheck,
    CacheClient,
    CacheLookup,
    CacheStatus,
    ClassifierClient,
    ClassifierStatus,
    DeadlineExceeded,
    Event,
    FieldError,
    InFlight,
    Limits,
    Metadata,
    Question,
    TextDelta,
    TierCall,
    TierClient,
    check_question,
    prices_cover,
)
from services.gateway.singleflight import SingleFlight

log = logging.getLogger(__name__)

Deadline = Callable[[], float]
"""The flight's deadline (monotonic), read whenever a timeout is set: the latest of
the callers sharing it, so it may move later while the work runs."""


class Observer(Protocol):
    """Where the orchestrator reports what happened (Prometheus in the service)."""

    def side_call_failed(self, service: str, call: str) -> None: ...

    def generation(self, tier: str) -> None: ...

    def speculated(self, taken: bool) -> None: ...

    def answered(self, meta: Metadata) -> None: ...


class _NullObserver:
    def side_call_failed(self, service: str, call: str) -> None:
        pass

    def generation(self, tier: str) -> None:
        pass

    def speculated(self, taken: bool) -> None:
        pass

    def answered(self, meta: Metadata) -> None:
        pass


@dataclass(frozen=True)
class OrchestratorConfig:
    """Knobs of the request flow (the service fills them from its settings)."""

    tier_prices: Mapping[str, float] = field(default_factory=dict)  # per 1k tokens
    limits: Limits = field(default_factory=Limits)
    default_temperature: float = 0.0
    default_max_tokens: int = 256
    cache_timeout_s: float = 0.5
    classifier_timeout_s: float = 0.5
    store_timeout_s: float = 2.0
    embed_once: bool = True
    side_share: float = 0.25
    confidence_method: ConfidenceMethod = "mean"
    default_timeout_s: float = 120.0
    speculate: bool = False  # start the route policy's first tier while scoring
    join_in_flight: bool = True  # a verified paraphrase of an answer in flight follows it
    in_flight_shown: int = 16  # the most prompts in flight one lookup brings the cache


class _InFlightBook:
    """The prompts this gateway is answering now, per cache scope, with their embeddings:
    what a miss of the same scope may share instead of generating again."""

    def __init__(self, shown: int) -> None:
        self.shown = shown
        self._by_scope: dict[str, dict[Hashable, InFlight]] = {}

    def of(self, scope: str, own: Hashable) -> list[tuple[Hashable, InFlight]]:
        """The scope's newest `shown` prompts in flight but `own`, each with its flight
        key."""
        flights = [(k, v) for k, v in self._by_scope.get(scope, {}).items() if k != own]
        return flights[-self.shown:]

    def add(self, scope: str, key: Hashable, item: InFlight) -> None:
        self._by_scope.setdefault(scope, {})[key] = item

    def remove(self, scope: str, key: Hashable) -> None:
        flights = self._by_scope.get(scope, {})
        flights.pop(key, None)
        if not flights:
            self._by_scope.pop(scope, None)


class _Ahead:
    """A tier call started before it is known to be wanted: what it yields waits in a
    queue until `take()` passes it on, or `cancel()` drops it (closing the call)."""

    def __init__(self, tier: str, items: AsyncIterator[TextDelta | _Answer]) -> None:
        self.tier = tier
        self.taken = False
        self._items = items
        self._queue: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(), name=f"speculative-{tier}")

    async def _pump(self) -> None:
        try:
            async for item in self._items:
                self._queue.put_nowait(("item", item))
            self._queue.put_nowait(("end", None))
        except Exception as exc:  # the caller meets it if it takes this call
            self._queue.put_nowait(("error", exc))

    async def take(self) -> AsyncIterator[TextDelta | _Answer]:
        """Everything the call yielded so far, then the rest as it comes."""
        while True:
            kind, value = await self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, Exception)
                raise value
            yield value  # type: ignore[misc]

    async def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._items.aclose()  # type: ignore[attr-defined]


@dataclass
class _Answer:
    text: str
    confidence: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    streamed: bool
    region: str = ""    # the region that finished it, when the tier runs across regions
    failover: str = ""  # why not the gateway's own region

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Orchestrator:
    """Runs questions through the cascade; one object per gateway process."""

    def __init__(self, policy: Policy, cache: CacheClient | None,
                 classifier: ClassifierClient | None, tiers: Mapping[str, TierClient],
                 config: OrchestratorConfig | None = None,
                 observer: Observer | None = None, auditor: Auditor | None = None) -> None:
        self.policy = policy
        self.cache = cache
        self.classifier = classifier
        self.tiers = dict(tiers)
        self.config = config or OrchestratorConfig(
            tier_prices={t: float(i + 1) for i, t in enumerate(policy.tiers)})
        self.observer: Observer = observer or _NullObserver()
        self.auditor = auditor  # samples hits and near-misses for the cache's audit
        if missing := [t for t in policy.tiers if t not in self.tiers]:
            raise ValueError(f"tiers: no client for tier {missing[0]!r}")
        prices_cover(self.config.tier_prices, policy.tiers)
        self.flights: SingleFlight[Event] = SingleFlight(lambda e: isinstance(e, Metadata))
        self.in_flight = _InFlightBook(self.config.in_flight_shown)

    def prepare(self, question: Question) -> tuple[Question, Policy]:
        """Check the question, fill the sampling defaults, and apply its policy overrides.

        Raises `FieldError` naming the field. Defaults are made explicit so the
        cache namespace and the tiers see the same values (an unset temperature
        is uncacheable, since the serving side's default is unknown there).
        """
        check_question(question, self.config.limits)
        s = question.sampling
        sampling = replace(
            s,
            temperature=self.config.default_temperature if s.temperature is None
            else s.temperature,
            max_tokens=s.max_tokens or min(self.config.default_max_tokens,
                                           self.config.limits.max_tokens_limit))
        try:
            policy = self.policy.with_overrides(question.policy or None,
                                                question.threshold_overrides)
            if question.force_tier and question.force_tier not in policy.tiers:
                raise ThresholdError(
                    f"force_tier: unknown tier {question.force_tier!r}; known: {policy.tiers}")
        except ThresholdError as exc:
            raise FieldError(f"policy.{exc.field}", exc.problem) from exc
        rid = question.request_id or uuid.uuid4().hex
        return replace(question, sampling=sampling, request_id=rid), policy

    async def ask(self, question: Question, timeout_s: float | None = None) -> AsyncIterator[Event]:
        """Answer `question` within `timeout_s` (the client's remaining deadline).

        Identical concurrent questions share one flight, which runs to the latest
        deadline among them; each caller still stops at its own (DEADLINE_EXCEEDED)."""
        question, policy = self.prepare(question)
        budget = timeout_s if timeout_s is not None else self.config.default_timeout_s
        deadline = time.monotonic() + budget
        started = time.perf_counter()
        first_ms: float | None = None
        stream = self.flights.stream(
            question.flight_key(), lambda flight: self._run(question, policy, flight), deadline)
        try:
            while True:
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):
                        joined, event = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    if isinstance(exc, DeadlineExceeded):  # the flight's own, replayed
                        raise
                    raise DeadlineExceeded("deadline passed before the answer was complete"
                                           ) from exc
                if isinstance(event, TextDelta):
                    if first_ms is None:
                        first_ms = (time.perf_counter() - started) * 1000
                    yield event
                    continue
                meta = replace(event, request_id=question.request_id, coalesced=joined,
                               latency_ms=dict(event.latency_ms))
                if joined:
                    meta.latency_ms["first_token_ms"] = first_ms or 0.0
                    meta.latency_ms["total_ms"] = (time.perf_counter() - started) * 1000
                yield meta
                return
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def _run(self, q: Question, policy: Policy, deadline: Deadline) -> AsyncIterator[Event]:
        ahead: list[_Ahead] = []  # a speculative tier call, cancelled unless taken whole
        listed: list[str] = []  # the scope this flight is listed in as an answer in flight
        try:
            async for event in self._answer(q, policy, deadline, ahead, listed):
                yield event
        finally:
            for call in ahead:
                await call.cancel()
            for scope in listed:
                self.in_flight.remove(scope, q.flight_key())

    def _speculates(self, q: Question, policy: Policy) -> bool:
        """Whether to start the first tier while the classifier scores: under the route
        policy (its first tier's answer streams as it comes), for interactive work."""
        return (self.config.speculate and policy.name == "route" and not q.force_tier
                and not q.batch and len(policy.tiers) > 1)

    async def _answer(self, q: Question, policy: Policy, deadline: Deadline,
                      ahead: list[_Ahead], listed: list[str]) -> AsyncIterator[Event]:
        started = time.perf_counter()
        latency: dict[str, float] = {}
        cache_status: CacheStatus = "skipped"
        lookup = CacheLookup(hit=False)
        scoring: asyncio.Task[tuple[float | None, ClassifierStatus]] | None = None
        wants_score = policy.needs_score() and not q.force_tier
        use_cache = self.cache is not None and not q.skip_cache
        # Embed once: when the scored text is the prompt itself (no earlier user turn),
        # the cache returns the prompt's vector and the classifier scores that vector.
        # Otherwise score while the cache looks up (a hit cancels the score).
        embed_once = (wants_score and use_cache and self.config.embed_once
                      and not any(t.role == "user" for t in q.conversation.turns))
        joins = use_cache and self.config.join_in_flight
        scope = fingerprint(q.scope()) if joins else ""
        others = self.in_flight.of(scope, q.flight_key()) if joins else []
        if not use_cache:
            self._refuse_when_no_tier_admits(q, policy, deadline)
        if wants_score and not embed_once:
            scoring = asyncio.create_task(self._timed_score(q, deadline, latency))
        try:
            if use_cache:
                t0 = time.perf_counter()
                lookup, cache_status = await self._lookup(
                    q, deadline, want_vector=embed_once or joins,
                    in_flight=[item for _, item in others])
                latency["cache_ms"] = (time.perf_counter() - t0) * 1000
                if self.auditor is not None:
                    self.auditor.consider(q.tenant, q.prompt, lookup)
            if lookup.hit and lookup.answer is not None:
                latency["first_token_ms"] = (time.perf_counter() - started) * 1000
                yield TextDelta(lookup.answer)
                yield self._hit_metadata(q, policy, lookup, latency, started)
                return
            if 0 <= lookup.in_flight < len(others):
                shared = False  # the flight may have ended meanwhile: then answer it here
                async for event in self._share(q, policy, others[lookup.in_flight][0],
                                               lookup, deadline, latency, started):
                    if not shared and scoring is not None:
                        scoring.cancel()  # a hit needs no score
                    shared = True
                    yield event
                if shared:
                    return
            if joins and lookup.vector and not q.no_store:  # no_store: never shared
                self.in_flight.add(scope, q.flight_key(), (q.prompt, lookup.vector))
                listed.append(scope)
            if use_cache:
                self._refuse_when_no_tier_admits(q, policy, deadline)
            if wants_score and self._speculates(q, policy):
                first = policy.tiers[0]  # its own latency book: the real one counts delivery
                ahead.append(_Ahead(first, self._generate(q, first, True, deadline, started,
                                                          {})))
            if embed_once:
                score, classifier_status = await self._timed_score(q, deadline, latency,
                                                                   lookup.vector)
            elif scoring is not None:
                score, classifier_status = await scoring
            else:
                score, classifier_status = None, "skipped"
        finally:
            if scoring is not None and not scoring.done():
                scoring.cancel()
        if classifier_status == "unavailable":
            # No score: start where the cascade starts, and let confidence decide.
            policy = policy.with_overrides("cascade")
        plan = policy.plan(score, q.force_tier or None)

        tiers_tried: list[str] = []
        used = [0, 0]  # prompt, completion tokens over every tier tried
        cost = 0.0
        tier: str | None = plan.tier
        kept: _Answer | None = None
        gen_started = time.perf_counter()
        while tier is not None:
            tiers_tried.append(tier)
            live = policy.next_tier(plan, tier, 0.0) is None
            answer = None
            taken = next((c for c in ahead if not c.taken and c.tier == tier and live
                          and len(tiers_tried) == 1), None)
            for call in [c for c in ahead if not c.taken and c is not taken]:
                await call.cancel()  # routed elsewhere (or not streamed): drop it
                ahead.remove(call)
                self.observer.speculated(False)
            if taken is not None:
                taken.taken = True  # still in `ahead`: cancelled if the client leaves
                self.observer.speculated(True)
            source = (taken.take() if taken is not None
                      else self._generate(q, tier, live, deadline, started, latency))
            async for item in source:
                if isinstance(item, TextDelta):
                    latency.setdefault("first_token_ms", (time.perf_counter() - started) * 1000)
                    yield item
                else:
                    answer = item
            assert answer is not None
            used[0] += answer.prompt_tokens
            used[1] += answer.completion_tokens
            cost += answer.tokens / 1000 * self.config.tier_prices[tier]
            step = policy.next_tier(plan, tier, answer.confidence)
            if step is None:
                kept = answer
                if not answer.streamed:
                    latency.setdefault("first_token_ms",
                                       (time.perf_counter() - started) * 1000)
                    yield TextDelta(answer.text)
                break
            tier = step
        assert kept is not None and tiers_tried
        latency["generation_ms"] = (time.perf_counter() - gen_started) * 1000
        # Stored before the metadata goes out, so the metadata can say whether it was:
        # the client has every delta already; only the closing message waits for the ack.
        store_reason = self._store_refusal(q, kept)
        if not store_reason:
            t0 = time.perf_counter()
            if not await self._store(q, kept, tiers_tried[-1], deadline):
                store_reason = "cache unavailable"
            latency["store_ms"] = (time.perf_counter() - t0) * 1000
        latency["total_ms"] = (time.perf_counter() - started) * 1000
        top_price = self.config.tier_prices[policy.tiers[-1]]
        meta = Metadata(
            request_id=q.request_id, tier=tiers_tried[-1], tiers_tried=tiers_tried,
            policy=plan.policy, cache_status=cache_status,
            cache_similarity=lookup.similarity, cache_probability=lookup.probability,
            classifier_status=classifier_status,
            classifier_score=score, confidence=kept.confidence,
            prompt_tokens=used[0], completion_tokens=used[1], cost=cost,
            saving=kept.tokens / 1000 * top_price - cost, finish_reason=kept.finish_reason,
            cache_stored=not store_reason, cache_store_reason=store_reason,
            region=kept.region, failover_reason=kept.failover, latency_ms=latency)
        self.observer.answered(meta)
        yield meta

    def _refuse_when_no_tier_admits(self, q: Question, policy: Policy,
                                    deadline: Deadline) -> None:
        """Raise at once, before the classifier or a tier does any work, when every tier
        the call could go to would refuse it now (the soonest retry-after of theirs):
        under overload the excess is turned away in milliseconds. Any tier that might
        admit it (or cannot say) lets it through to the plan."""
        refusals: list[Exception] = []
        request = GenerationRequest(prompt=q.prompt, conversation=q.conversation,
                                    sampling=q.sampling)
        call = TierCall(request, tenant=q.tenant, timeout_s=deadline() - time.monotonic(),
                        batch=q.batch)
        for tier in [q.force_tier] if q.force_tier else policy.tiers:
            client = self.tiers[tier]
            refusal = client.refusal(call) if isinstance(client, AdmissionCheck) else None
            if refusal is None:
                return
            refusals.append(refusal)
        raise min(refusals, key=lambda e: getattr(e, "retry_after_s", None) or float("inf"))

    def _store_refusal(self, q: Question, answer: _Answer) -> str:
        """Why `answer` must not be stored, or '' when it may. An answer cut at
        `max_tokens` is stored: `max_tokens` is part of the namespace, so only a request
        with the same limit finds it, and at temperature 0 that request would be cut at
        the same token."""
        if self.cache is None:
            return "no cache configured"
        if q.no_store:
            return "no_store"
        if answer.finish_reason not in ("stop", "length"):
            return f"finished by {answer.finish_reason}"
        if not answer.text.strip():
            return "empty answer"
        return ""

    def _hit_metadata(self, q: Question, policy: Policy, lookup: CacheLookup,
                      latency: dict[str, float], started: float) -> Metadata:
        latency["total_ms"] = (time.perf_counter() - started) * 1000
        top_price = self.config.tier_prices[policy.tiers[-1]]
        meta = Metadata(
            request_id=q.request_id, tier=lookup.tier, tiers_tried=[], policy=policy.name,
            cache_status="hit", cache_similarity=lookup.similarity,
            cache_probability=lookup.probability, confidence=1.0,
            prompt_tokens=lookup.prompt_tokens, completion_tokens=lookup.completion_tokens,
            cost=0.0,
            saving=(lookup.prompt_tokens + lookup.completion_tokens) / 1000 * top_price,
            finish_reason=("length" if q.sampling.max_tokens and lookup.completion_tokens
                           >= q.sampling.max_tokens else "stop"),
            cache_store_reason="served from the cache", latency_ms=latency)
        self.observer.answered(meta)
        return meta

    async def _share(self, q: Question, policy: Policy, key: Hashable, lookup: CacheLookup,
                     deadline: Deadline, latency: dict[str, float],
                     started: float) -> AsyncIterator[Event]:
        """Follow the flight `key` (a verified paraphrase being answered now) as a hit:
        its text as it comes, then metadata of a hit on its answer. Yields nothing when
        that flight has ended meanwhile."""
        async for event in self.flights.follow(key, deadline()):
            if isinstance(event, TextDelta):
                latency.setdefault("first_token_ms", (time.perf_counter() - started) * 1000)
                yield event
                continue
            latency["total_ms"] = (time.perf_counter() - started) * 1000
            meta = Metadata(
                request_id=q.request_id, tier=event.tier, tiers_tried=[], policy=policy.name,
                cache_status="hit", cache_similarity=lookup.similarity,
                cache_probability=lookup.probability, confidence=event.confidence,
                prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                cost=0.0, saving=event.cost + event.saving, finish_reason=event.finish_reason,
                cache_store_reason="shared the answer in flight of a verified paraphrase",
                region=event.region, latency_ms=latency)
            self.observer.answered(meta)
            yield meta

    def _side_timeout(self, limit: float, deadline: Deadline) -> float:
        return max(0.0, min(limit, (deadline() - time.monotonic()) * self.config.side_share))

    async def _lookup(self, q: Question, deadline: Deadline, want_vector: bool = False,
                      in_flight: list[InFlight] | None = None) -> tuple[CacheLookup, CacheStatus]:
        assert self.cache is not None
        timeout = self._side_timeout(self.config.cache_timeout_s, deadline)
        try:
            async with asyncio.timeout(timeout):
                found = await self.cache.lookup(q.scope(), q.prompt, timeout, want_vector,
                                                in_flight or ())
        except Exception as exc:  # best-effort: a failed lookup is a miss
            log.warning("request %s: cache lookup failed (%s); treated as a miss",
                        q.request_id, type(exc).__name__)
            self.observer.side_call_failed("cache", "lookup")
            return CacheLookup(hit=False), "unavailable"
        return found, "hit" if found.hit and found.answer is not None else "miss"

    async def _timed_score(self, q: Question, deadline: Deadline, latency: dict[str, float],
                           vector: tuple[float, ...] = ()) -> tuple[float | None, ClassifierStatus]:
        t0 = time.perf_counter()
        try:
            return await self._score(q, deadline, vector)
        finally:
            latency["classifier_ms"] = (time.perf_counter() - t0) * 1000

    async def _score(self, q: Question, deadline: Deadline,
                     vector: tuple[float, ...] = ()) -> tuple[float | None, ClassifierStatus]:
        if self.classifier is None:
            return None, "unavailable"
        timeout = self._side_timeout(self.config.classifier_timeout_s, deadline)
        try:
            async with asyncio.timeout(timeout):
                score = await self.classifier.score(q.scope(), q.prompt, timeout, vector)
                return score, "scored"
        except Exception as exc:  # best-effort: no score falls back to the cascade
            log.warning("request %s: classifier failed (%s); cascading instead",
                        q.request_id, type(exc).__name__)
            self.observer.side_call_failed("classifier", "score")
            return None, "unavailable"

    async def _store(self, q: Question, answer: _Answer, tier: str, deadline: Deadline) -> bool:
        """Store the answer within its share of the deadline; False when the cache failed
        or was too slow."""
        assert self.cache is not None
        timeout = self._side_timeout(self.config.store_timeout_s, deadline)
        try:
            async with asyncio.timeout(timeout):
                await self.cache.store(q.scope(), q.prompt, answer.text, tier,
                                       answer.prompt_tokens, answer.completion_tokens,
                                       timeout)
        except Exception as exc:  # logged and counted; the text is already out
            log.warning("request %s: cache store failed (%s)", q.request_id,
                        type(exc).__name__)
            self.observer.side_call_failed("cache", "store")
            return False
        return True

    async def _generate(self, q: Question, tier: str, live: bool, deadline: Deadline,
                        started: float, latency: dict[str, float],
                        ) -> AsyncIterator[TextDelta | _Answer]:
        """One tier's answer. A call cut off by the deadline it started with continues
        after the tokens already made (`continue_token_ids`) when a caller with a later
        deadline has joined the flight since, so its text is neither repeated nor lost."""
        parts: list[str] = []
        tokens: list[int] = []
        logprobs: list[float] = []
        prompt_tokens = completion_tokens = 0
        finish = "stop"
        region = failover = ""
        self.observer.generation(tier)
        while True:
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"deadline passed before tier {tier!r} could finish")
            request = GenerationRequest(
                prompt=q.prompt, conversation=q.conversation, sampling=q.sampling, chat=True,
                logprobs=True, request_id=f"{q.request_id}-{tier}",
                continue_token_ids=tuple(tokens), continue_text="".join(parts))
            call = TierCall(request, tenant=q.tenant, timeout_s=remaining, batch=q.batch)
            try:
                async with asyncio.timeout(remaining):
                    async for delta in self.tiers[tier].generate(call):
                        if delta.region:
                            region, failover = delta.region, delta.failover
                        if delta.text:
                            parts.append(delta.text)
                            if live:
                                latency.setdefault("first_token_ms",
                                                   (time.perf_counter() - started) * 1000)
                                yield TextDelta(delta.text)
                        tokens += delta.token_ids
                        logprobs.extend(lp.logprob for lp in delta.logprobs)
                        if delta.finish_reason is not None:
                            finish = delta.finish_reason
                            prompt_tokens = delta.prompt_tokens
                            completion_tokens = delta.completion_tokens
                break
            except TimeoutError as exc:
                if deadline() - time.monotonic() <= 0:
                    raise DeadlineExceeded(
                        f"deadline passed while tier {tier!r} was generating") from exc
                log.info("request %s: tier %s continues after %d tokens for a caller with "
                         "a later deadline", q.request_id, tier, len(tokens))
        conf = confidence(logprobs, self.config.confidence_method)
        yield _Answer("".join(parts), conf, prompt_tokens, completion_tokens, finish, live,
                      region, failover)
