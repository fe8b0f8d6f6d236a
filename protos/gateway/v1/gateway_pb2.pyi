from google.protobuf import struct_pb2 as _struct_pb2
from protos.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AskRequest(_message.Message):
    __slots__ = ("prompt", "conversation", "sampling", "policy")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    conversation: _common_pb2.Conversation
    sampling: _common_pb2.SamplingParams
    policy: PolicyOverrides
    def __init__(self, prompt: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., policy: _Optional[_Union[PolicyOverrides, _Mapping]] = ...) -> None: ...

class PolicyOverrides(_message.Message):
    __slots__ = ("policy", "thresholds", "force_tier", "skip_cache", "no_store")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    FORCE_TIER_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    NO_STORE_FIELD_NUMBER: _ClassVar[int]
    policy: str
    thresholds: _struct_pb2.Struct
    force_tier: str
    skip_cache: bool
    no_store: bool
    def __init__(self, policy: _Optional[str] = ..., thresholds: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., force_tier: _Optional[str] = ..., skip_cache: _Optional[bool] = ..., no_store: _Optional[bool] = ...) -> None: ...

class LatencyBreakdown(_message.Message):
    __slots__ = ("cache_ms", "classifier_ms", "queue_ms", "first_token_ms", "generation_ms", "total_ms", "store_ms")
    CACHE_MS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_MS_FIELD_NUMBER: _ClassVar[int]
    cache_ms: float
    classifier_ms: float
    queue_ms: float
    first_token_ms: float
    generation_ms: float
    total_ms: float
    store_ms: float
    def __init__(self, cache_ms: _Optional[float] = ..., classifier_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., first_token_ms: _Optional[float] = ..., generation_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., store_ms: _Optional[float] = ...) -> None: ...

class ResponseMetadata(_message.Message):
    __slots__ = ("request_id", "tier", "tiers_tried", "cache_hit", "cache_similarity", "cache_verifier_probability", "classifier_score", "confidence", "policy", "usage", "cost", "latency", "finish_reason", "saving", "cache_status", "classifier_status", "coalesced", "cache_stored", "cache_store_reason", "region", "failover_reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TIERS_TRIED_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    CACHE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CACHE_VERIFIER_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_SCORE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    SAVING_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIER_STATUS_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    CACHE_STORED_FIELD_NUMBER: _ClassVar[int]
    CACHE_STORE_REASON_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    tier: str
    tiers_tried: _containers.RepeatedScalarFieldContainer[str]
    cache_hit: bool
    cache_similarity: float
    cache_verifier_probability: float
    classifier_score: float
    confidence: float
    policy: str
    usage: _common_pb2.Usage
    cost: float
    latency: LatencyBreakdown
    finish_reason: _common_pb2.FinishReason
    saving: float
    cache_status: str
    classifier_status: str
    coalesced: bool
    cache_stored: bool
    cache_store_reason: str
    region: str
    failover_reason: str
    def __init__(self, request_id: _Optional[str] = ..., tier: _Optional[str] = ..., tiers_tried: _Optional[_Iterable[str]] = ..., cache_hit: _Optional[bool] = ..., cache_similarity: _Optional[float] = ..., cache_verifier_probability: _Optional[float] = ..., classifier_score: _Optional[float] = ..., confidence: _Optional[float] = ..., policy: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., cost: _Optional[float] = ..., latency: _Optional[_Union[LatencyBreakdown, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., saving: _Optional[float] = ..., cache_status: _Optional[str] = ..., classifier_status: _Optional[str] = ..., coalesced: _Optional[bool] = ..., cache_stored: _Optional[bool] = ..., cache_store_reason: _Optional[str] = ..., region: _Optional[str] = ..., failover_reason: _Optional[str] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("text", "metadata")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text: str
    metadata: ResponseMetadata
    def __init__(self, text: _Optional[str] = ..., metadata: _Optional[_Union[ResponseMetadata, _Mapping]] = ...) -> None: ...

class AskChunk(_message.Message):
    __slots__ = ("text_delta", "metadata")
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text_delta: str
    metadata: ResponseMetadata
    def __init__(self, text_delta: _Optional[str] = ..., metadata: _Optional[_Union[ResponseMetadata, _Mapping]] = ...) -> None: ...
