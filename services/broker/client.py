"""The broker's client library: publish a generation job, yield its chunks.

    async with BrokerClient(["nats://127.0.0.1:4222"]) as client:
        job = await client.submit(GenerateJob(tier="small", prompt="Hi", stream=True),
                                  deadline_s=30)
        async for chunk in job:
            print(chunk.text_delta, end="")

`submit` fails at once when the tier's queue (or the tenant's share of it) is
full: `JobError` with code RESOURCE_EXHAUSTED and `retry_after_ms` (the gateway
puts it into trailing metadata). Iterating yields each chunk once, in order:
after a broker died and another took the job over, text the client already
has (by character offset) is dropped. Leaving the loop early, `cancel()`, or the
deadline passing cancels the job on the broker (its backend call is aborted).

The broker holding a job sends it a heartbeat chunk every half second or so
(not yielded). With a `TierWatch` (the brokers' tier beacons), `submit`
refuses at once a tier with no live broker or no healthy backend replica, and
a job whose heartbeats stopped for `stall_s` while its tier has no live broker
fails with UNAVAILABLE naming the tier, instead of waiting for its deadline;
when the broker holding it died but another broker of the tier lives, it fails
with `JobOrphaned` (an UNAVAILABLE), which a caller resumes as a new job after
the text it has (`partial_token_ids`) rather than waiting for the queue's ack
wait to hand the old one over. A job that went quiet before any heartbeat named
its broker (a broker killed in the instant between taking the job and saying so)
is orphaned the same way once a broker of its tier is gone and the queue's
consumer shows the job was delivered (one consumer-info request, asked only
then).

Chunks travel on core NATS, at most once: what the broker sends while the
connection is down is lost. So a job whose chunks stop after the client's
connection came back, or whose next chunk starts past the text received (a
gap), fails with `JobError` UNAVAILABLE, which a caller may retry, instead of
waiting for its deadline or passing on an answer with a hole in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import nats
from nats.js.errors import APIError, NoStreamResponseError

from core.errors import DomainError, ErrorKind
from protos.broker.v1 import broker_pb2
from services.broker.beacons import TierWatch
from services.broker.subjects import (
    CANCEL_SUBJECT,
    consumer_name,
    job_class_of,
    job_subject,
    stream_name,
)
from services.common.errors import status_of_code
from services.common.tracing import trace_headers

_FULL = 10077  # JetStream: maximum messages (per subject) exceeded
_QUIET_S = 1.0  # after a reconnect, this long without a chunk means the chunks were lost
_TICK_S = 0.25  # how often a waiting stream looks at its heartbeats and its tier
_DELIVERY_CHECK_S = 1.0  # a quiet job with no known broker asks its consumer this often


class JobError(DomainError):
    """A job that failed or was refused; `code` is a grpc.StatusCode name, and the
    error's `kind` the same (so `services.common.errors` maps it to that status). A code
    that names no kind leaves the class's UNAVAILABLE: the tier could not answer."""

    kind = ErrorKind.UNAVAILABLE

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None,
                 field: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.field = field  # the request field an INVALID_ARGUMENT names, when it names one
        self.kind = ErrorKind.__members__.get(code, ErrorKind.UNAVAILABLE)  # type: ignore[misc]


class JobOrphaned(JobError):
    """The broker holding the job died while its tier has another live broker: resume
    the job (a new one after the tokens received) instead of waiting for redelivery."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)


class JobStream:
    """The chunks of one submitted job (async iterator); see the module doc."""

    def __init__(self, client: BrokerClient, job: broker_pb2.GenerateJob, sub: Any,
                 queue: asyncio.Queue[broker_pb2.JobChunk], deadline: float | None,
                 grace_s: float, seq: int = 0) -> None:
        self.job = job
        self.seq = seq  # the job's sequence in its tier's stream (0: not known)
        self._client, self._sub, self._queue = client, sub, queue
        self._deadline, self._grace = deadline, grace_s
        self._sign = time.monotonic()  # the last chunk or heartbeat (or the submit)
        self._have = len(job.partial_text)  # characters of the answer received
        self._holder = ""  # the broker holding the job, from its heartbeats
        self._brokers: set[str] = set()  # the tier's brokers seen live while it waits
        self._asked = 0.0  # when the consumer was last asked whether the job was delivered
        self._done = False
        self._reconnects = client.reconnects  # the connection's count when submitted
        self.attempts: set[int] = set()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def __aiter__(self) -> AsyncGenerator[broker_pb2.JobChunk, None]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[broker_pb2.JobChunk, None]:
        try:
            while not self._done:
                chunk = await self._next()
                self.attempts.add(chunk.attempt)
                if chunk.HasField("error") and chunk.error.code:
                    self._done = True
                    raise JobError(status_of_code(chunk.error.code).name,
                                   chunk.error.message, chunk.error.retry_after_ms or None,
                                   chunk.error.field)
                if self.job.stream:
                    if chunk.offset > self._have:
                        raise JobError("UNAVAILABLE", f"chunks lost: one starts at character "
                                       f"{chunk.offset}, {self._have} received")
                    skip = self._have - chunk.offset  # text a dead broker's attempt sent
                    if skip > 0:
                        if skip >= len(chunk.text_delta) and not chunk.finish_reason:
                            continue
                        chunk.text_delta = chunk.text_delta[skip:]
                    self._have = max(self._have, chunk.offset) + len(chunk.text_delta)
                if chunk.finish_reason:
                    self._done = True
                yield chunk
        finally:
            if not self._done:
                self._done = True
                await self.cancel()
            await self._close()

    async def _next(self) -> broker_pb2.JobChunk:
        while True:
            timeout = None
            if self._deadline is not None:
                timeout = self._deadline + self._grace - time.time()
            if timeout is not None and timeout <= 0:
                self._done = True
                await self.cancel()
                raise JobError("DEADLINE_EXCEEDED", "no answer before the deadline")
            wait = _TICK_S if timeout is None else min(timeout, _TICK_S)
            try:
                chunk = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                quiet = time.monotonic() - self._sign
                if self._client.reconnects != self._reconnects and quiet > _QUIET_S:
                    raise JobError("UNAVAILABLE", "the NATS connection was lost while the "
                                   "job ran, and its chunks with it") from None
                watch = self._client.tier_watch
                if watch is not None and quiet > self._client.stall_s:
                    await self._check_holder(watch, quiet)
                continue
            self._sign = time.monotonic()
            self._holder = chunk.broker_id or self._holder
            if not chunk.heartbeat:
                return chunk

    async def _check_holder(self, watch: TierWatch, quiet: float) -> None:
        """Raise when the job went quiet because its tier or its broker is gone."""
        tier, region = self.job.tier, self.job.region
        problem = watch.problem(tier, region)
        if problem is not None:
            raise JobError("UNAVAILABLE", f"{problem}; no sign of the job for {quiet:.1f} s")
        if self._holder and not watch.live(tier, self._holder, region):
            raise JobOrphaned(f"tier {tier!r}: broker {self._holder} holding the "
                              f"job stopped (no sign for {quiet:.1f} s)")
        live = set(watch.live_brokers(tier, region))
        gone, self._brokers = self._brokers - live, self._brokers | live
        if not self._holder and gone and await self._delivered():
            raise JobOrphaned(f"tier {tier!r}: the job was taken from the queue but no "
                              f"live broker holds it (broker {min(gone)} stopped; no sign "
                              f"for {quiet:.1f} s)")

    async def _delivered(self) -> bool:
        """Whether the tier's consumer handed this job to a broker (at most one question
        each `_DELIVERY_CHECK_S`; False when unknown)."""
        now = time.monotonic()
        if not self.seq or now - self._asked < _DELIVERY_CHECK_S:
            return False
        self._asked = now
        try:
            info = await self._client.js.consumer_info(
                stream_name(self.job.tier, self.job.region),
                consumer_name(self.job.tier, job_class_of(self.job)))
        except Exception:  # the stream is electing a leader, or NATS is reconnecting
            return False
        return int(info.delivered.stream_seq or 0) >= self.seq

    async def text(self) -> str:
        """The whole answer (joins the stream, or the one unary chunk)."""
        return "".join([c.text_delta async for c in self])

    async def cancel(self) -> None:
        """Ask every broker to drop the job (abort it if running)."""
        await self._client.cancel(self.job_id)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class BrokerClient:
    """A NATS connection for submitting jobs (async context manager)."""

    def __init__(self, servers: Sequence[str] | str, retry_after_ms: int = 500,
                 publish_timeout_s: float = 2.0, deadline_grace_s: float = 1.0,
                 publish_retry_s: float = 10.0, nc: Any = None,
                 connect_options: Mapping[str, Any] | None = None,
                 tier_watch: TierWatch | None = None, stall_s: float = 2.0) -> None:
        self.connect_options = dict(connect_options or {})  # credentials, inbox prefix
        self.publish_retry_s = publish_retry_s
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.retry_after_ms = retry_after_ms
        self.publish_timeout_s = publish_timeout_s
        self.deadline_grace_s = deadline_grace_s
        self.tier_watch, self.stall_s = tier_watch, stall_s
        self.nc = nc
        self._own = nc is None
        self.js: Any = nc.jetstream() if nc is not None else None

    async def __aenter__(self) -> Self:
        if self.nc is None:
            self.nc = await nats.connect(servers=self.servers, max_reconnect_attempts=-1,
                                         reconnect_time_wait=0.2, **self.connect_options)
            self.js = self.nc.jetstream()
        if self.tier_watch is not None:
            await self.tier_watch.start(self.nc)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.tier_watch is not None:
            await self.tier_watch.stop()
        if self._own and self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()

    @property
    def reconnects(self) -> int:
        """How often the connection came back after a loss (nats.py's own count)."""
        return int(self.nc.stats["reconnects"]) if self.nc is not None else 0

    async def submit(self, job: broker_pb2.GenerateJob,
                     deadline_s: float | None = None) -> JobStream:
        """Publish `job` (job id, reply subject and deadline filled in when unset)."""
        job_ = broker_pb2.GenerateJob()
        job_.CopyFrom(job)
        job_.job_id = job_.job_id or uuid.uuid4().hex
        job_.reply_subject = job_.reply_subject or self.nc.new_inbox()
        if deadline_s is not None:
            job_.deadline.FromNanoseconds(int((time.time() + deadline_s) * 1e9))
        deadline = (job_.deadline.seconds + job_.deadline.nanos / 1e9
                    if job_.HasField("deadline") else None)
        job_class = job_class_of(job_)
        try:
            subject = job_subject(job_.tier, job_class, job_.tenant, job_.region)
        except ValueError as exc:
            raise JobError("INVALID_ARGUMENT", str(exc)) from exc
        problem = (self.tier_watch.problem(job_.tier, job_.region)
                   if self.tier_watch is not None else None)
        if problem is not None:
            raise JobError("UNAVAILABLE", problem)
        queue: asyncio.Queue[broker_pb2.JobChunk] = asyncio.Queue()

        async def on_chunk(msg: Any) -> None:
            with contextlib.suppress(Exception):
                queue.put_nowait(broker_pb2.JobChunk.FromString(msg.data))

        sub = await self.nc.subscribe(job_.reply_subject, cb=on_chunk)
        try:
            seq = await self._publish(subject, job_)
        except BaseException:
            await sub.unsubscribe()
            raise
        return JobStream(self, job_, sub, queue, deadline, self.deadline_grace_s, seq)

    async def _publish(self, subject: str, job: broker_pb2.GenerateJob) -> int:
        """Store the job once (its sequence in the stream returned); retry briefly while
        a clustered stream elects a leader.

        A refusal for a full queue is final at once. "No responders" and timeouts
        are retried with the same `Nats-Msg-Id` (stored once) for `publish_retry_s`.
        """
        end = time.monotonic() + self.publish_retry_s
        while True:
            try:
                ack = await self.js.publish(
                    subject, job.SerializeToString(), timeout=self.publish_timeout_s,
                    headers={"Nats-Msg-Id": job.job_id, **trace_headers()})
                return int(ack.seq or 0)
            except APIError as exc:
                if exc.err_code == _FULL:
                    raise JobError("RESOURCE_EXHAUSTED", f"tier {job.tier} queue full: "
                                   f"{exc.description}", self.retry_after_ms) from exc
                if exc.code != 503 or time.monotonic() > end:
                    raise JobError("UNAVAILABLE", str(exc)) from exc
            except (NoStreamResponseError, TimeoutError, nats.errors.Error) as exc:
                if time.monotonic() > end:
                    raise JobError("UNAVAILABLE", f"no queue for tier {job.tier}: "
                                   f"{type(exc).__name__}") from exc
            await asyncio.sleep(0.1)

    async def cancel(self, job_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.nc.publish(CANCEL_SUBJECT,
                                  broker_pb2.CancelJob(job_id=job_id).SerializeToString())
