import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_INTERACTIVE: _ClassVar[Priority]
    PRIORITY_BATCH: _ClassVar[Priority]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_INTERACTIVE: Priority
PRIORITY_BATCH: Priority

class GenerateJob(_message.Message):
    __slots__ = ("job_id", "tier", "tenant", "prompt", "conversation", "sampling", "return_logprobs", "reply_subject", "deadline", "priority", "affinity_key", "stream", "chat", "partial_token_ids", "partial_text", "region")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    REPLY_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_KEY_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_TEXT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tier: str
    tenant: str
    prompt: str
    conversation: _common_pb2.Conversation
    sampling: _common_pb2.SamplingParams
    return_logprobs: bool
    reply_subject: str
    deadline: _timestamp_pb2.Timestamp
    priority: Priority
    affinity_key: str
    stream: bool
    chat: bool
    partial_token_ids: _containers.RepeatedScalarFieldContainer[int]
    partial_text: str
    region: str
    def __init__(self, job_id: _Optional[str] = ..., tier: _Optional[str] = ..., tenant: _Optional[str] = ..., prompt: _Optional[str] = ..., conversation: _Optional[_Union[_common_pb2.Conversation, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., return_logprobs: _Optional[bool] = ..., reply_subject: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., affinity_key: _Optional[str] = ..., stream: _Optional[bool] = ..., chat: _Optional[bool] = ..., partial_token_ids: _Optional[_Iterable[int]] = ..., partial_text: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., field: _Optional[str] = ...) -> None: ...

class JobChunk(_message.Message):
    __slots__ = ("job_id", "seq", "text_delta", "logprobs", "finish_reason", "usage", "error", "attempt", "offset", "token_ids", "heartbeat", "broker_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    text_delta: str
    logprobs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TokenLogprob]
    finish_reason: _common_pb2.FinishReason
    usage: _common_pb2.Usage
    error: JobError
    attempt: int
    offset: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    heartbeat: bool
    broker_id: str
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., text_delta: _Optional[str] = ..., logprobs: _Optional[_Iterable[_Union[_common_pb2.TokenLogprob, _Mapping]]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., heartbeat: _Optional[bool] = ..., broker_id: _Optional[str] = ...) -> None: ...

class TierBeacon(_message.Message):
    __slots__ = ("tier", "broker_id", "replicas", "healthy_replicas", "free_slots", "running", "buffered", "down", "region")
    TIER_FIELD_NUMBER: _ClassVar[int]
    BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    tier: str
    broker_id: str
    replicas: int
    healthy_replicas: int
    free_slots: int
    running: int
    buffered: int
    down: bool
    region: str
    def __init__(self, tier: _Optional[str] = ..., broker_id: _Optional[str] = ..., replicas: _Optional[int] = ..., healthy_replicas: _Optional[int] = ..., free_slots: _Optional[int] = ..., running: _Optional[int] = ..., buffered: _Optional[int] = ..., down: _Optional[bool] = ..., region: _Optional[str] = ...) -> None: ...

class CancelJob(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("tier", "address", "healthy", "in_flight", "free_slots", "queue_depth")
    TIER_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    tier: str
    address: str
    healthy: bool
    in_flight: int
    free_slots: int
    queue_depth: int
    def __init__(self, tier: _Optional[str] = ..., address: _Optional[str] = ..., healthy: _Optional[bool] = ..., in_flight: _Optional[int] = ..., free_slots: _Optional[int] = ..., queue_depth: _Optional[int] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("tier", "job_class", "pending", "buffered")
    TIER_FIELD_NUMBER: _ClassVar[int]
    JOB_CLASS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    tier: str
    job_class: str
    pending: int
    buffered: int
    def __init__(self, tier: _Optional[str] = ..., job_class: _Optional[str] = ..., pending: _Optional[int] = ..., buffered: _Optional[int] = ...) -> None: ...

class BrokerStatus(_message.Message):
    __slots__ = ("replicas", "queues", "jobs_completed", "jobs_terminated", "redeliveries")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    JOBS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    JOBS_TERMINATED_FIELD_NUMBER: _ClassVar[int]
    REDELIVERIES_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStatus]
    jobs_completed: int
    jobs_terminated: int
    redeliveries: int
    def __init__(self, replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueStatus, _Mapping]]] = ..., jobs_completed: _Optional[int] = ..., jobs_terminated: _Optional[int] = ..., redeliveries: _Optional[int] = ...) -> None: ...
