"""Protobuf <-> the gateway's own messages (AskRequest, ResponseMetadata, cache Scope).

The shared vocabulary (conversation, sampling, usage, finish reason) goes
through the kit's one conversion module, `services.common.convert`; only what
is the gateway's alone is here.
"""

from __future__ import annotations

from cache.keys import Scope
from core.generation import Usage
from protos.cache.v1 import cache_pb2
from protos.gateway.v1 import gateway_pb2
from services.common.convert import (
    conversation_from_proto,
    conversation_to_proto,
    finish_reason_to_proto,
    sampling_from_proto,
    sampling_to_proto,
    struct_from_proto,
    usage_to_proto,
)
from services.gateway.domain import Metadata, Question


def scope_to_pb(scope: Scope) -> cache_pb2.Scope:
    return cache_pb2.Scope(tenant=scope.tenant,
                           conversation=conversation_to_proto(scope.conversation),
                           sampling=sampling_to_proto(scope.sampling), policy=scope.policy)


def question_from_pb(req: gateway_pb2.AskRequest, tenant: str, request_id: str,
                     max_turns: int | None = None) -> Question:
    """The orchestrator's view of an AskRequest; the tenant comes from the API key.
    Turns past `max_turns` are refused before any is converted (200,000 empty turns
    took 1.5 s to convert)."""
    thresholds = struct_from_proto(req.policy.thresholds, "policy.thresholds")
    return Question(
        tenant=tenant, prompt=req.prompt,
        conversation=conversation_from_proto(req.conversation, max_turns=max_turns),
        sampling=sampling_from_proto(req.sampling),
        policy=req.policy.policy,
        thresholds=tuple(sorted(thresholds.items())), force_tier=req.policy.force_tier,
        skip_cache=req.policy.skip_cache, no_store=req.policy.no_store, request_id=request_id)


def metadata_to_pb(m: Metadata) -> gateway_pb2.ResponseMetadata:
    lat = m.latency_ms
    return gateway_pb2.ResponseMetadata(
        request_id=m.request_id, tier=m.tier, tiers_tried=m.tiers_tried,
        cache_hit=m.cache_status == "hit", cache_similarity=m.cache_similarity,
        cache_verifier_probability=m.cache_probability,
        classifier_score=m.classifier_score if m.classifier_score is not None else 0.0,
        confidence=m.confidence, policy=m.policy,
        usage=usage_to_proto(Usage(m.prompt_tokens, m.completion_tokens)),
        cost=m.cost, saving=m.saving,
        latency=gateway_pb2.LatencyBreakdown(
            cache_ms=lat.get("cache_ms", 0.0), classifier_ms=lat.get("classifier_ms", 0.0),
            queue_ms=lat.get("queue_ms", 0.0), first_token_ms=lat.get("first_token_ms", 0.0),
            generation_ms=lat.get("generation_ms", 0.0), total_ms=lat.get("total_ms", 0.0),
            store_ms=lat.get("store_ms", 0.0)),
        finish_reason=finish_reason_to_proto(m.finish_reason),
        cache_status=m.cache_status, classifier_status=m.classifier_status,
        coalesced=m.coalesced, cache_stored=m.cache_stored,
        cache_store_reason=m.cache_store_reason, region=m.region,
        failover_reason=m.failover_reason)
