"""One job's life on the broker: checks, and the run over backend replicas.

No NATS here: the job arrives as its protobuf, chunks leave through a
`ChunkSink`, backends are reached through `BackendCalls`. What the queue does
with the outcome (ack, term, nak, republish) is the caller's business.

A replica that dies mid-generation does not restart the answer: the tokens
already produced go with the next attempt (`continue_token_ids`), so a
streaming client sees the text continue with nothing repeated or missing,
and a unary client gets one whole answer.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import ErrorKind, FieldError, Overloaded
from core.generation import Delta, GenerationRequest
from protos.broker.v1 import broker_pb2
from services.broker.dispatch import Replica
from services.broker.scheduler import JobClass
from services.broker.subjects import job_class_of
from services.common.convert import (
    finish_reason_to_proto,
    job_to_generation_request,
    logprobs_to_proto,
)
from services.common.errors import wire_code

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ReplicaFailed(RuntimeError):
    """The replica broke the call (died, unreachable, internal error): try another."""


class BackendCalls(Protocol):
    """Stream a job's answer from one replica, continuing after `continue_ids`."""

    def generate(self, address: str, request: GenerationRequest,
                 continue_ids: Sequence[int], timeout: float | None) -> AsyncIterator[Delta]: ...


class ChunkSink(Protocol):
    async def send(self, chunk: broker_pb2.JobChunk) -> None: ...


class Outcome(enum.Enum):
    DONE = "done"            # ack
    INVALID = "invalid"      # term: the backend refused a field
    EXPIRED = "expired"      # term: deadline passed
    CANCELLED = "cancelled"  # term
    RETRY = "retry"          # no replica could finish it now: back to the queue


@dataclass
class JobRun:
    """A checked job plus what its attempts have produced so far."""

    job: broker_pb2.GenerateJob
    request: GenerationRequest
    job_class: JobClass
    deadline: float | None  # epoch seconds
    attempt: int = 1        # JetStream delivery count
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    seq: int = 0

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def chunk(self, **fields: Any) -> broker_pb2.JobChunk:
        chunk = broker_pb2.JobChunk(job_id=self.job_id, seq=self.seq, attempt=self.attempt,
                                    **fields)
        self.seq += 1
        return chunk

    def error(self, code: int, message: str, field_name: str = "") -> broker_pb2.JobChunk:
        return self.chunk(error=broker_pb2.JobError(code=code, message=message,
                                                    field=field_name),
                          finish_reason=4)  # FINISH_REASON_ERROR


def check_job(job: broker_pb2.GenerateJob, tier: str, attempt: int = 1) -> JobRun:
    """A JobRun for a well-formed job of `tier`; FieldError names the bad field."""
    if not _ID.match(job.job_id):
        raise FieldError("job_id", "1-128 characters of A-Z a-z 0-9 _ . : -")
    if job.tier != tier:
        raise FieldError("tier", f"{job.tier!r} published on tier {tier!r}")
    if not job.reply_subject or any(c in job.reply_subject for c in " \t*>"):
        raise FieldError("reply_subject", "must be a plain NATS subject")
    if not job.prompt.strip():
        raise FieldError("prompt", "must not be empty")
    if job.priority not in (0, 1, 2):
        raise FieldError("priority", "unknown value")
    if job.sampling.HasField("max_tokens") and job.sampling.max_tokens <= 0:
        raise FieldError("sampling.max_tokens", "must be > 0")
    if len(job.partial_token_ids) and not job.partial_text:
        raise FieldError("partial_text", "must come with partial_token_ids")
    deadline = None
    if job.HasField("deadline"):
        deadline = job.deadline.seconds + job.deadline.nanos / 1e9
    return JobRun(job, job_to_generation_request(job), job_class_of(job), deadline, attempt,
                  list(job.partial_token_ids), job.partial_text)


Choose = Callable[[JobRun, set[str]], Awaitable[Replica | None]]


async def run_job(run: JobRun, first: Replica, backend: BackendCalls, sink: ChunkSink,
                  choose: Choose, max_attempts: int = 3) -> Outcome:
    """Run the job on `first`, failing over to replicas `choose` gives; send its chunks.

    Raises CancelledError when cancelled (the backend call is cancelled with it).
    """
    replica: Replica | None = first
    tried: set[str] = set()
    logprobs: list[Any] = []
    for attempt in range(max_attempts):
        if replica is None:
            break
        if run.expired():  # never hand a backend a job it could only abandon
            await sink.send(run.error(wire_code(ErrorKind.DEADLINE_EXCEEDED),
                                      "deadline passed before a backend took the job"))
            return Outcome.EXPIRED
        tried.add(replica.address)
        replica.local_in_flight += 1
        try:
            async for piece in backend.generate(replica.address, run.request, run.tokens,
                                                run.remaining()):
                if run.job.stream and (piece.text or piece.token_ids or piece.finish_reason):
                    chunk = run.chunk(text_delta=piece.text, offset=len(run.text),
                                      token_ids=piece.token_ids,
                                      logprobs=logprobs_to_proto(piece.logprobs))
                    _finish(chunk, piece)
                    await sink.send(chunk)
                run.tokens += piece.token_ids
                run.text += piece.text
                logprobs += piece.logprobs
                if piece.finish_reason:
                    if not run.job.stream:
                        chunk = run.chunk(text_delta=run.text, offset=0, token_ids=run.tokens,
                                          logprobs=logprobs_to_proto(logprobs))
                        _finish(chunk, piece)
                        await sink.send(chunk)
                    return Outcome.DONE
            raise ReplicaFailed("stream ended without a finish reason")
        except FieldError as exc:
            await sink.send(run.error(wire_code(ErrorKind.INVALID_ARGUMENT), exc.problem,
                                      exc.field))
            return Outcome.INVALID
        except TimeoutError:
            await sink.send(run.error(wire_code(ErrorKind.DEADLINE_EXCEEDED),
                                      "deadline passed during generation"))
            return Outcome.EXPIRED
        except (ReplicaFailed, Overloaded) as exc:
            if isinstance(exc, ReplicaFailed):
                replica.healthy = False
            log.warning("job %s: replica %s failed (%s) after %d tokens; attempt %d of %d",
                        run.job_id, replica.address, exc, len(run.tokens), attempt + 1,
                        max_attempts)
        finally:
            replica.local_in_flight -= 1
        if run.expired():
            await sink.send(run.error(wire_code(ErrorKind.DEADLINE_EXCEEDED),
                                      "deadline passed during generation"))
            return Outcome.EXPIRED
        replica = await choose(run, tried)
    return Outcome.RETRY


def _finish(chunk: broker_pb2.JobChunk, piece: Delta) -> None:
    if piece.finish_reason:
        chunk.finish_reason = finish_reason_to_proto(piece.finish_reason)
        chunk.usage.prompt_tokens = piece.prompt_tokens
        chunk.usage.completion_tokens = piece.completion_tokens
