"""Protobuf <-> the gateway's domain types, in one place."""

from __future__ import annotations

from google.protobuf import json_format

from cache.keys import Sampling, Scope, Turn
from cmesh.errors import FieldError
from protos.cache.v1 import cache_pb2
from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2
from services.gateway.domain import Metadata, Question

_ROLES = {common_pb2.ROLE_USER: "user", common_pb2.ROLE_ASSISTANT: "assistant"}
_ROLE_PB = {v: k for k, v in _ROLES.items()}
FINISH = {"stop": common_pb2.FINISH_REASON_STOP, "length": common_pb2.FINISH_REASON_LENGTH,
          "abort": common_pb2.FINISH_REASON_ABORT}
FINISH_NAME = {v: k for k, v in FINISH.items()}


def sampling_from_pb(s: common_pb2.SamplingParams) -> Sampling:
    return Sampling(
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        seed=s.seed if s.HasField("seed") else None, stop=tuple(s.stop))


def sampling_to_pb(s: Sampling) -> common_pb2.SamplingParams:
    msg = common_pb2.SamplingParams(stop=list(s.stop))
    for name in ("temperature", "top_p", "top_k", "max_tokens", "seed"):
        value = getattr(s, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def conversation_to_pb(system_prompt: str, turns: tuple[Turn, ...]) -> common_pb2.Conversation:
    return common_pb2.Conversation(
        system_prompt=system_prompt,
        turns=[common_pb2.Turn(role=_ROLE_PB.get(t.role, common_pb2.ROLE_UNSPECIFIED),
                               content=t.content) for t in turns])


def scope_to_pb(scope: Scope) -> cache_pb2.Scope:
    return cache_pb2.Scope(tenant=scope.tenant,
                           conversation=conversation_to_pb(scope.system_prompt, scope.turns),
                           sampling=sampling_to_pb(scope.sampling), policy=scope.policy)


def question_from_pb(req: gateway_pb2.AskRequest, tenant: str, request_id: str) -> Question:
    """The orchestrator's view of an AskRequest; the tenant comes from the API key."""
    turns = []
    for i, t in enumerate(req.conversation.turns):
        if t.role not in _ROLES:
            raise FieldError(f"conversation.turns[{i}].role", "must be USER or ASSISTANT")
        turns.append(Turn(_ROLES[t.role], t.content))
    thresholds = json_format.MessageToDict(req.policy.thresholds)
    return Question(
        tenant=tenant, prompt=req.prompt, system_prompt=req.conversation.system_prompt,
        turns=tuple(turns), sampling=sampling_from_pb(req.sampling), policy=req.policy.policy,
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
        usage=common_pb2.Usage(prompt_tokens=m.prompt_tokens,
                               completion_tokens=m.completion_tokens),
        cost=m.cost, saving=m.saving,
        latency=gateway_pb2.LatencyBreakdown(
            cache_ms=lat.get("cache_ms", 0.0), classifier_ms=lat.get("classifier_ms", 0.0),
            queue_ms=lat.get("queue_ms", 0.0), first_token_ms=lat.get("first_token_ms", 0.0),
            generation_ms=lat.get("generation_ms", 0.0), total_ms=lat.get("total_ms", 0.0)),
        finish_reason=FINISH.get(m.finish_reason, common_pb2.FINISH_REASON_ERROR),
        cache_status=m.cache_status, classifier_status=m.classifier_status,
        coalesced=m.coalesced)
