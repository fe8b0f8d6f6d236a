"""All of the broker service's NATS code: streams, pull consumers, acks, replies.

Per tier, one work-queue stream (`GEN_<TIER>`, subjects `gen.<tier>.>`),
bounded in jobs overall and per tenant with discard-new, so a publish to a
full queue is refused at once (the client turns that into
RESOURCE_EXHAUSTED). Per tier and class, one durable pull consumer that every
broker shares, with explicit acks: a job is acked only when its answer is
complete, `in_progress()` keeps it while it runs, `term()` drops a poison or
expired job, `nak(delay)` gives it back. Replies (JobChunk) go over core NATS
to the job's reply subject.

A clustered consumer that fails over can redeliver a job whose ack it had
not yet replicated; completed job ids therefore go to a replicated KV bucket
(and each broker's memory), and such a redelivery is acked without running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.js import api
from nats.js.errors import BadRequestError

from protos.broker.v1 import broker_pb2
from services.broker.subjects import (
    CANCEL_SUBJECT,
    beacon_subject,
    class_filter,
    consumer_name,
    job_subject,
    queue_root,
    stream_name,
)
from services.common.regions import regional_stream

log = logging.getLogger(__name__)

DONE_BUCKET = "BROKER_DONE"


@dataclass(frozen=True)
class QueueLimits:
    """Bounds of one tier's stream and consumers."""

    max_jobs: int = 1000          # queued jobs per tier (both classes)
    tenant_max_jobs: int = 100    # queued jobs per tenant and class
    replicas: int = 1             # JetStream replicas (3 on a three-node cluster)
    ack_wait_s: float = 30.0      # a job held this long without a sign of life is redelivered
    max_deliver: int = 5
    max_ack_pending: int = 1000   # jobs out to brokers and not yet acked, per class
    max_age_s: float = 3600.0
    done_memory_s: float = 900.0  # completed job ids kept to recognise late redeliveries
    region: str = ""  # the broker's region: its queues' names and their NATS cluster

    def where(self) -> api.Placement | None:
        """The streams' placement: this broker's region, when it has one."""
        return api.Placement(cluster=self.region) if self.region else None

    @property
    def done_bucket(self) -> str:
        """The region's bucket of completed job ids (a job lives in one region's queue)."""
        return done_bucket(self.region)


def done_bucket(region: str = "") -> str:
    return regional_stream(DONE_BUCKET, region)


def stream_config(tier: str, limits: QueueLimits) -> api.StreamConfig:
    return api.StreamConfig(
        name=stream_name(tier, limits.region),
        subjects=[f"{queue_root(tier, limits.region)}.>"],
        retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
        max_msgs=limits.max_jobs, max_msgs_per_subject=limits.tenant_max_jobs,
        discard=api.DiscardPolicy.NEW, discard_new_per_subject=True,
        num_replicas=limits.replicas, max_age=limits.max_age_s, duplicate_window=120.0,
        placement=limits.where(),
    )


async def ensure_stream(js: Any, tier: str, limits: QueueLimits) -> None:
    """Create the tier's stream, or bring an existing one to these limits."""
    config = stream_config(tier, limits)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


class JobQueue:
    """A NATS connection with the broker's JetStream operations (async context manager)."""

    def __init__(self, servers: Sequence[str], limits: QueueLimits, name: str = "broker",
                 connect_options: Mapping[str, Any] | None = None) -> None:
        self.servers = list(servers)
        self.connect_options = dict(connect_options or {})  # credentials, inbox prefix
        self.limits = limits
        self.name = name
        self.nc: Any = None
        self.js: Any = None
        self._done: Any = None  # KV bucket of recently completed job ids

    async def __aenter__(self) -> JobQueue:
        self.nc = await nats.connect(
            servers=self.servers, name=self.name, max_reconnect_attempts=-1,
            reconnect_time_wait=0.2, connect_timeout=5,
            disconnected_cb=_note("disconnected"), reconnected_cb=_note("reconnected"),
            error_cb=_error, **self.connect_options,
        )
        self.js = self.nc.jetstream(timeout=5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def ensure(self, tier: str) -> None:
        await ensure_stream(self.js, tier, self.limits)
        if self._done is None:
            try:
                self._done = await self.js.create_key_value(
                    bucket=self.limits.done_bucket, ttl=self.limits.done_memory_s, history=1,
                    replicas=self.limits.replicas, placement=self.limits.where())
            except BadRequestError:
                self._done = await self.js.key_value(self.limits.done_bucket)

    async def mark_done(self, job_id: str) -> None:
        """Remember a completed job, so a redelivery after a lost ack is not run again."""
        with contextlib.suppress(Exception):
            await self._done.put(_done_key(job_id), b"1")

    async def was_done(self, job_id: str) -> bool:
        try:
            await self._done.get(_done_key(job_id))
            return True
        except Exception:  # not found, or the bucket unreachable: run it
            return False

    async def consumer(self, tier: str, job_class: str) -> Any:
        """The shared durable pull consumer of one tier and class."""
        lim = self.limits
        subjects = class_filter(tier, job_class, lim.region)
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=lim.ack_wait_s,
            max_deliver=lim.max_deliver, max_ack_pending=lim.max_ack_pending,
            filter_subject=subjects,
        )
        return await self.js.pull_subscribe(
            subjects, durable=consumer_name(tier, job_class),
            stream=stream_name(tier, lim.region), config=config,
        )

    async def fetch(self, sub: Any, count: int, wait_s: float) -> list[Any]:
        """Up to `count` jobs, waiting at most `wait_s` for the first; [] on a timeout."""
        try:
            return list(await sub.fetch(count, timeout=wait_s))
        except TimeoutError:
            return []
        except Exception as exc:  # leader election, reconnect: try again shortly
            log.warning("fetch failed: %s", exc or type(exc).__name__)
            await asyncio.sleep(min(wait_s, 0.5))
            return []

    async def pending(self, tier: str, job_class: str) -> int:
        """Jobs in the stream not yet delivered to any broker."""
        try:
            info = await self.js.consumer_info(stream_name(tier, self.limits.region),
                                               consumer_name(tier, job_class))
            return int(info.num_pending or 0)
        except Exception:
            return 0

    async def reply(self, subject: str, chunk: broker_pb2.JobChunk) -> None:
        try:
            await self.nc.publish(subject, chunk.SerializeToString())
        except Exception as exc:  # the client is gone or NATS is reconnecting
            log.warning("reply to %s failed: %s", subject, exc)

    async def announce(self, tier: str, beacon: broker_pb2.TierBeacon) -> None:
        """Publish the tier's beacon (core NATS: a lost one is replaced by the next)."""
        with contextlib.suppress(Exception):
            await self.nc.publish(beacon_subject(tier, self.limits.region),
                                  beacon.SerializeToString())

    async def republish(self, job: broker_pb2.GenerateJob, job_class: str) -> bool:
        """Queue a continuation of a job (its partial output inside); True once stored."""
        subject = job_subject(job.tier, job_class, job.tenant, job.region)
        msg_id = f"{job.job_id}+{len(job.partial_token_ids)}"
        try:
            await self.js.publish(subject, job.SerializeToString(),
                                  headers={"Nats-Msg-Id": msg_id})
            return True
        except Exception as exc:
            log.warning("republish of %s failed: %s", job.job_id, exc)
            return False

    async def on_cancel(self, handle: Callable[[str], Awaitable[None]]) -> None:
        async def cb(msg: Any) -> None:
            try:
                job_id = broker_pb2.CancelJob.FromString(msg.data).job_id
            except Exception:
                return
            await handle(job_id)

        await self.nc.subscribe(CANCEL_SUBJECT, cb=cb)


async def settle(msg: Any, action: str, delay: float | None = None,
                 ack_retry_s: float = 15.0) -> None:
    """ack (confirmed by the server), term, nak(delay) or in_progress; never raises.

    An ack is retried for `ack_retry_s`: while a clustered consumer elects a new
    leader, acks find no responder, and an ack given up on means the job runs twice.
    """
    try:
        if action == "ack":
            end = asyncio.get_running_loop().time() + ack_retry_s
            while True:
                try:
                    await msg.ack_sync(timeout=2.0)
                    return
                except Exception:
                    if asyncio.get_running_loop().time() > end:
                        raise
                    await asyncio.sleep(0.25)
        elif action == "term":
            await msg.term()
        elif action == "nak":
            await msg.nak(delay=delay)
        else:
            await msg.in_progress()
    except Exception as exc:
        log.warning("%s failed: %s", action, exc or type(exc).__name__)


def _done_key(job_id: str) -> str:
    return hashlib.blake2b(job_id.encode(), digest_size=16).hexdigest()


def delivery_count(msg: Any) -> int:
    return int(msg.metadata.num_delivered)


def _note(what: str) -> Callable[[], Awaitable[None]]:
    async def cb() -> None:
        log.warning("NATS %s", what)

    return cb


async def _error(exc: Exception) -> None:
    log.warning("NATS error: %s", exc)
