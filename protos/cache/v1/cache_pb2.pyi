import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scope(_message.Message):
    __slots__ = ("tenant", "conversation", "sampling", "policy")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation: _common_pb2.Conversation
    sampling: _common_pb2.SamplingParams
    policy: str
    def __init__(self, tenant: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., policy: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "prompt", "answer", "tier", "usage", "created", "last_hit", "hit_count")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LAST_HIT_FIELD_NUMBER: _ClassVar[int]
    HIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    prompt: str
    answer: str
    tier: str
    usage: _common_pb2.Usage
    created: _timestamp_pb2.Timestamp
    last_hit: _timestamp_pb2.Timestamp
    hit_count: int
    def __init__(self, id: _Optional[str] = ..., prompt: _Optional[str] = ..., answer: _Optional[str] = ..., tier: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_hit: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hit_count: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("scope", "prompt", "return_embedding", "in_flight")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RETURN_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    scope: Scope
    prompt: str
    return_embedding: bool
    in_flight: _containers.RepeatedCompositeFieldContainer[InFlight]
    def __init__(self, scope: _Optional[_Union[Scope, _Mapping]] = ..., prompt: _Optional[str] = ..., return_embedding: _Optional[bool] = ..., in_flight: _Optional[_Iterable[_Union[InFlight, _Mapping]]] = ...) -> None: ...

class InFlight(_message.Message):
    __slots__ = ("prompt", "embedding")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, prompt: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("hit", "entry", "similarity", "verifier_probability", "namespace", "embedding", "near_miss", "in_flight_match")
    HIT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    NEAR_MISS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_MATCH_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    entry: Entry
    similarity: float
    verifier_probability: float
    namespace: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    near_miss: Entry
    in_flight_match: int
    def __init__(self, hit: _Optional[bool] = ..., entry: _Optional[_Union[Entry, _Mapping]] = ..., similarity: _Optional[float] = ..., verifier_probability: _Optional[float] = ..., namespace: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., near_miss: _Optional[_Union[Entry, _Mapping]] = ..., in_flight_match: _Optional[int] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("tenant", "entry_id", "hit", "same")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    SAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entry_id: str
    hit: bool
    same: bool
    def __init__(self, tenant: _Optional[str] = ..., entry_id: _Optional[str] = ..., hit: _Optional[bool] = ..., same: _Optional[bool] = ...) -> None: ...

class AuditEstimate(_message.Message):
    __slots__ = ("tenant", "verdicts", "wrong", "low", "high", "step", "effective_delta", "threshold", "near_misses", "near_misses_same")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    WRONG_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_DELTA_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEAR_MISSES_FIELD_NUMBER: _ClassVar[int]
    NEAR_MISSES_SAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    verdicts: int
    wrong: int
    low: float
    high: float
    step: int
    effective_delta: float
    threshold: float
    near_misses: int
    near_misses_same: int
    def __init__(self, tenant: _Optional[str] = ..., verdicts: _Optional[int] = ..., wrong: _Optional[int] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., step: _Optional[int] = ..., effective_delta: _Optional[float] = ..., threshold: _Optional[float] = ..., near_misses: _Optional[int] = ..., near_misses_same: _Optional[int] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("scope", "prompt", "answer", "tier", "usage")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    scope: Scope
    prompt: str
    answer: str
    tier: str
    usage: _common_pb2.Usage
    def __init__(self, scope: _Optional[_Union[Scope, _Mapping]] = ..., prompt: _Optional[str] = ..., answer: _Optional[str] = ..., tier: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("stored", "entry_id", "namespace", "reason", "durable")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    entry_id: str
    namespace: str
    reason: str
    durable: bool
    def __init__(self, stored: _Optional[bool] = ..., entry_id: _Optional[str] = ..., namespace: _Optional[str] = ..., reason: _Optional[str] = ..., durable: _Optional[bool] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("tenant", "entry_id", "scope", "whole_tenant")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    WHOLE_TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    entry_id: str
    scope: Scope
    whole_tenant: bool
    def __init__(self, tenant: _Optional[str] = ..., entry_id: _Optional[str] = ..., scope: _Optional[_Union[Scope, _Mapping]] = ..., whole_tenant: _Optional[bool] = ...) -> None: ...

class InvalidateResponse(_message.Message):
    __slots__ = ("removed", "durable")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    removed: int
    durable: bool
    def __init__(self, removed: _Optional[int] = ..., durable: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("entries", "namespaces", "lookups", "hits", "guard_rejections", "evictions", "expirations", "delta", "expected_hit_rate", "expected_wrong_hit_rate", "degraded", "pending_writes", "refused_writes", "audits")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    GUARD_REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_WRONG_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    PENDING_WRITES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_WRITES_FIELD_NUMBER: _ClassVar[int]
    AUDITS_FIELD_NUMBER: _ClassVar[int]
    entries: int
    namespaces: int
    lookups: int
    hits: int
    guard_rejections: int
    evictions: int
    expirations: int
    delta: float
    expected_hit_rate: float
    expected_wrong_hit_rate: float
    degraded: bool
    pending_writes: int
    refused_writes: int
    audits: _containers.RepeatedCompositeFieldContainer[AuditEstimate]
    def __init__(self, entries: _Optional[int] = ..., namespaces: _Optional[int] = ..., lookups: _Optional[int] = ..., hits: _Optional[int] = ..., guard_rejections: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ..., delta: _Optional[float] = ..., expected_hit_rate: _Optional[float] = ..., expected_wrong_hit_rate: _Optional[float] = ..., degraded: _Optional[bool] = ..., pending_writes: _Optional[int] = ..., refused_writes: _Optional[int] = ..., audits: _Optional[_Iterable[_Union[AuditEstimate, _Mapping]]] = ...) -> None: ...
