"""gRPC clients behind the orchestrator's Protocols: cache, classifier, backend tiers.

The direct backend client serves tests and stacks without a broker; the
broker client (`services.gateway.broker_tier`) has the same interface.
Errors become domain errors here, so the orchestrator never sees grpc.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from cache.keys import Scope
from core.errors import DomainError, ErrorKind, FieldError, Overloaded
from core.generation import Delta
from protos.backend.v1 import backend_pb2_grpc
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.common.convert import (
    chunk_to_delta,
    conversation_to_proto,
    generation_request_to_proto,
)
from services.common.errors import error_from_rpc
from services.gateway.convert import scope_to_pb
from services.gateway.domain import (
    CacheLookup,
    DeadlineExceeded,
    InFlight,
    TierCall,
    TierUnavailable,
)


class GrpcCache:
    """The cache service; its errors propagate and the orchestrator counts them as misses."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = cache_pb2_grpc.CacheStub(channel)

    async def lookup(self, scope: Scope, prompt: str, timeout: float,
                     want_vector: bool = False,
                     in_flight: Sequence[InFlight] = ()) -> CacheLookup:
        reply = await self._stub.Lookup(
            cache_pb2.LookupRequest(
                scope=scope_to_pb(scope), prompt=prompt, return_embedding=want_vector,
                in_flight=[cache_pb2.InFlight(prompt=p, embedding=v) for p, v in in_flight]),
            timeout=timeout)
        if not reply.hit:
            return CacheLookup(hit=False, similarity=reply.similarity,
                               probability=reply.verifier_probability,
                               vector=tuple(reply.embedding), entry_id=reply.near_miss.id,
                               cached_prompt=reply.near_miss.prompt,
                               in_flight=reply.in_flight_match - 1)
        e = reply.entry
        return CacheLookup(hit=True, similarity=reply.similarity,
                           probability=reply.verifier_probability, answer=e.answer, tier=e.tier,
                           prompt_tokens=e.usage.prompt_tokens,
                           completion_tokens=e.usage.completion_tokens, entry_id=e.id,
                           cached_prompt=e.prompt)

    async def audit(self, tenant: str, entry_id: str, hit: bool, same: bool,
                    timeout: float) -> None:
        """A judge's verdict on a hit or near-miss (the cache's `Audit`)."""
        await self._stub.Audit(cache_pb2.AuditRequest(tenant=tenant, entry_id=entry_id,
                                                      hit=hit, same=same), timeout=timeout)

    async def store(self, scope: Scope, prompt: str, answer: str, tier: str,
                    prompt_tokens: int, completion_tokens: int, timeout: float) -> bool:
        reply = await self._stub.Store(cache_pb2.StoreRequest(
            scope=scope_to_pb(scope), prompt=prompt, answer=answer, tier=tier,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}),
            timeout=timeout)
        return reply.stored


class GrpcClassifier:
    """The classifier service: one prompt scored in its conversation."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = classifier_pb2_grpc.ClassifierStub(channel)

    async def score(self, scope: Scope, prompt: str, timeout: float,
                    vector: tuple[float, ...] = ()) -> float:
        request = classifier_pb2.ScoreRequest(
            prompts=[prompt], conversation=conversation_to_proto(scope.conversation))
        if vector:
            request.embeddings.add(values=vector)
        reply = await self._stub.Score(request, timeout=timeout)
        return float(reply.scores[0])


def tier_error(tier: str, err: DomainError) -> Exception:
    """What a tier's failure means to the gateway's caller (either tier client): the
    peer's bad-field and overload errors pass on with their data, a passed deadline
    stays one, anything else is that tier being unavailable, named."""
    if isinstance(err, FieldError):
        return err
    if isinstance(err, Overloaded):
        return Overloaded(f"tier {tier!r} is overloaded: {err}", err.retry_after_s)
    if err.kind is ErrorKind.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"tier {tier!r}: deadline passed while generating")
    return TierUnavailable(tier, f"{err.kind.value}: {err}")


class BackendTier:
    """One tier served by a backend over direct gRPC; cancelling the stream aborts the job."""

    def __init__(self, tier: str, channel: grpc.aio.Channel) -> None:
        self.tier = tier
        self._stub = backend_pb2_grpc.BackendStub(channel)

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        stream = self._stub.Generate(generation_request_to_proto(call.request),
                                     timeout=call.timeout_s)
        try:
            async for chunk in stream:
                yield chunk_to_delta(chunk)
        except grpc.aio.AioRpcError as err:
            raise tier_error(self.tier, error_from_rpc(err)) from err
        finally:
            stream.cancel()
