"""Protobuf <-> domain conversions, in one place for every servicer, the broker and the gateway.

Domain types come from `core.generation`; the messages from `protos/`. Bad
input found while converting raises `FieldError` naming the field, with the
caller's `field` prefix (a cache Scope's conversation is `scope.conversation`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import FieldError
from core.generation import (
    Conversation,
    Delta,
    GenerationRequest,
    Sampling,
    TokenLogprob,
    Turn,
    Usage,
)
from core.prefill import DEFAULT_TOP, PrefillStats
from protos.backend.v1 import backend_pb2
from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2

_ROLE_FROM_PROTO = {common_pb2.ROLE_USER: "user", common_pb2.ROLE_ASSISTANT: "assistant"}
_ROLE_TO_PROTO = {name: value for value, name in _ROLE_FROM_PROTO.items()}
_FINISH_TO_PROTO = {
    "stop": common_pb2.FINISH_REASON_STOP,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "abort": common_pb2.FINISH_REASON_ABORT,
    "error": common_pb2.FINISH_REASON_ERROR,
}
_FINISH_FROM_PROTO = {value: name for name, value in _FINISH_TO_PROTO.items()}


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def struct_from_proto(msg: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A Struct as plain Python values; a NaN or infinite number is a FieldError naming
    its key (JSON has no such numbers, and no threshold or penalty means anything there)."""
    return {key: _value(value, f"{field}.{key}") for key, value in msg.fields.items()}


def _value(msg: struct_pb2.Value, field: str) -> Any:
    kind = msg.WhichOneof("kind")
    if kind == "number_value":
        if not math.isfinite(msg.number_value):
            raise FieldError(field, f"must be a finite number, got {msg.number_value}")
        return msg.number_value
    if kind == "struct_value":
        return struct_from_proto(msg.struct_value, field)
    if kind == "list_value":
        return [_value(v, f"{field}[{i}]") for i, v in enumerate(msg.list_value.values)]
    if kind == "string_value":
        return msg.string_value
    if kind == "bool_value":
        return msg.bool_value
    return None


def conversation_from_proto(msg: common_pb2.Conversation, field: str = "conversation",
                            max_turns: int | None = None) -> Conversation:
    """The domain conversation; a turn without a user/assistant role, or more than
    `max_turns` turns (counted before any is converted), is a FieldError."""
    if max_turns is not None and len(msg.turns) > max_turns:
        raise FieldError(_prefixed(field, "turns"), f"more than {max_turns} turns")
    turns = []
    for i, turn in enumerate(msg.turns):
        role = _ROLE_FROM_PROTO.get(turn.role)
        if role is None:
            raise FieldError(f"{_prefixed(field, 'turns')}[{i}].role",
                             "must be ROLE_USER or ROLE_ASSISTANT")
        turns.append(Turn(role, turn.content))
    return Conversation(system_prompt=msg.system_prompt, turns=tuple(turns))


def conversation_to_proto(conversation: Conversation) -> common_pb2.Conversation:
    """The protobuf conversation; a role other than user/assistant is a FieldError."""
    msg = common_pb2.Conversation(system_prompt=conversation.system_prompt)
    for i, turn in enumerate(conversation.turns):
        role = _ROLE_TO_PROTO.get(turn.role)
        if role is None:
            raise FieldError(f"conversation.turns[{i}].role", "must be user or assistant")
        msg.turns.add(role=role, content=turn.content)
    return msg


def sampling_from_proto(msg: common_pb2.SamplingParams) -> Sampling:
    """Unset optional fields stay None (the serving side's default)."""

    has = msg.HasField
    return Sampling(temperature=msg.temperature if has("temperature") else None,
                    top_p=msg.top_p if has("top_p") else None,
                    top_k=msg.top_k if has("top_k") else None,
                    max_tokens=msg.max_tokens if has("max_tokens") else None,
                    seed=msg.seed if has("seed") else None, stop=tuple(msg.stop))


def sampling_to_proto(sampling: Sampling) -> common_pb2.SamplingParams:
    """Only the fields that are set travel, so the receiver can tell unset from 0."""
    msg = common_pb2.SamplingParams(stop=list(sampling.stop))
    for name in ("temperature", "top_p", "top_k", "max_tokens", "seed"):
        value = getattr(sampling, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def usage_to_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens)


def usage_from_proto(msg: common_pb2.Usage) -> Usage:
    return Usage(prompt_tokens=msg.prompt_tokens, completion_tokens=msg.completion_tokens)


def finish_reason_to_proto(reason: str | None) -> common_pb2.FinishReason:
    """None (not finished) is UNSPECIFIED; an unknown engine reason is ERROR."""
    if reason is None:
        return common_pb2.FINISH_REASON_UNSPECIFIED
    return _FINISH_TO_PROTO.get(reason, common_pb2.FINISH_REASON_ERROR)


def finish_reason_from_proto(value: common_pb2.FinishReason) -> str | None:
    return _FINISH_FROM_PROTO.get(value)


def logprobs_to_proto(logprobs: Iterable[TokenLogprob]) -> list[common_pb2.TokenLogprob]:
    return [common_pb2.TokenLogprob(token_id=i, token=t, logprob=lp) for i, t, lp in logprobs]


def logprobs_from_proto(msgs: Iterable[common_pb2.TokenLogprob]) -> list[TokenLogprob]:
    return [TokenLogprob(m.token_id, m.token, m.logprob) for m in msgs]


def generation_request_from_proto(msg: backend_pb2.GenerateRequest) -> GenerationRequest:
    """The engine's view of a GenerateRequest (range checks happen in the engine)."""
    return GenerationRequest(
        prompt=msg.prompt,
        conversation=conversation_from_proto(msg.conversation),
        sampling=sampling_from_proto(msg.sampling),
        chat=msg.chat,
        logprobs=msg.return_logprobs,
        extra=struct_from_proto(msg.sampling_overrides, "sampling_overrides"),
        request_id=msg.request_id,
        continue_token_ids=tuple(msg.continue_token_ids),
    )


def generation_request_to_proto(request: GenerationRequest) -> backend_pb2.GenerateRequest:
    """The GenerateRequest a client (broker, gateway) sends for a domain request."""
    msg = backend_pb2.GenerateRequest(
        request_id=request.request_id, prompt=request.prompt,
        conversation=conversation_to_proto(request.conversation),
        sampling=sampling_to_proto(request.sampling), chat=request.chat,
        return_logprobs=request.logprobs,
        continue_token_ids=list(request.continue_token_ids))
    if request.extra:
        msg.sampling_overrides.update(dict(request.extra))
    return msg


def prefill_request_from_proto(msg: backend_pb2.PrefillRequest) -> tuple[GenerationRequest, int]:
    """The engine's view of a PrefillRequest: the prompt as a generation would send it, and
    how many next-token candidates to use (0 = the default; range checks in the engine)."""
    request = GenerationRequest(prompt=msg.prompt,
                                conversation=conversation_from_proto(msg.conversation),
                                chat=msg.chat, request_id=msg.request_id)
    return request, msg.top_logprobs or DEFAULT_TOP


def prefill_stats_to_proto(stats: PrefillStats) -> backend_pb2.PrefillStats:
    return backend_pb2.PrefillStats(
        prompt_tokens=stats.prompt_tokens, scored_tokens=stats.scored_tokens,
        mean_logprob=stats.mean_logprob, min_logprob=stats.min_logprob,
        next_entropy=stats.next_entropy, top_mass=stats.top_mass, top_logprobs=stats.top,
        option_mass=dict(stats.option_mass))


def delta_to_chunk(delta: Delta) -> backend_pb2.GenerateChunk:
    """One streamed chunk; the last carries the finish reason and usage."""
    chunk = backend_pb2.GenerateChunk(text_delta=delta.text, token_ids=delta.token_ids,
                                      logprobs=logprobs_to_proto(delta.logprobs))
    if delta.finish_reason is not None:
        chunk.finish_reason = finish_reason_to_proto(delta.finish_reason)
        chunk.usage.CopyFrom(usage_to_proto(delta.usage))
    return chunk


def chunk_to_delta(chunk: backend_pb2.GenerateChunk | broker_pb2.JobChunk) -> Delta:
    """The domain delta of a received chunk, from a backend or from the broker (the two
    messages share these fields); usage counts are 0 until the last chunk."""
    return Delta(text=chunk.text_delta, token_ids=list(chunk.token_ids),
                 logprobs=logprobs_from_proto(chunk.logprobs),
                 finish_reason=finish_reason_from_proto(chunk.finish_reason),
                 prompt_tokens=chunk.usage.prompt_tokens,
                 completion_tokens=chunk.usage.completion_tokens)


def job_to_generation_request(job: broker_pb2.GenerateJob) -> GenerationRequest:
    """The generation a broker job asks for (its job id as the request id)."""
    return GenerationRequest(
        prompt=job.prompt, conversation=conversation_from_proto(job.conversation),
        sampling=sampling_from_proto(job.sampling), chat=job.chat,
        logprobs=job.return_logprobs, request_id=job.job_id)


def generation_request_to_job(request: GenerationRequest, tier: str, *, tenant: str = "",
                              batch: bool = False, stream: bool = True,
                              affinity_key: str = "") -> broker_pb2.GenerateJob:
    """The broker job a client (the gateway) publishes for a domain request; one that
    continues after tokens already made carries them (and their text) as partial output."""
    return broker_pb2.GenerateJob(
        job_id=request.request_id, tier=tier, tenant=tenant, prompt=request.prompt,
        conversation=conversation_to_proto(request.conversation),
        sampling=sampling_to_proto(request.sampling), chat=request.chat,
        return_logprobs=request.logprobs, stream=stream, affinity_key=affinity_key,
        priority=broker_pb2.PRIORITY_BATCH if batch else broker_pb2.PRIORITY_INTERACTIVE,
        partial_token_ids=list(request.continue_token_ids),
        partial_text=request.continue_text)


def timestamp(seconds: float) -> Timestamp:
    """A protobuf Timestamp of a Unix time in seconds."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
