"""One tier's worker: pull jobs while backends have room, schedule, run, settle.

Pullers (one per class) fetch only up to the tier's free backend slots plus a
small look-ahead; the scheduler picks class and tenant; each job runs as its
own task over the dispatch pick; the outcome decides ack / term / nak.
Fetched and running jobs get `in_progress()` every third of the ack wait, so
JetStream redelivers a job only when its broker is gone.

Every `heartbeat_s` the worker announces the tier (`TierBeacon` on
`broker.tier.<tier>`) and sends a heartbeat chunk to each job it holds, so
clients learn within seconds that a broker died. A tier whose every replica
has been unhealthy for `down_after_s` is down: the jobs it holds or fetches
end at once with UNAVAILABLE naming the tier, instead of waiting for a
replica until their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from core.errors import ErrorKind, FieldError
from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.backends import GrpcBackends
from services.broker.dispatch import POLICIES, Replica, affinity_key, pick, total_free
from services.broker.jetstream import JobQueue, delivery_count, settle
from services.broker.jobs import JobRun, Outcome, check_job, run_job
from services.broker.metrics import BrokerMetrics
from services.broker.scheduler import CLASSES, JobClass, Scheduler
from services.broker.settings import BrokerSettings
from services.common.errors import wire_code
from services.common.tracing import continued_trace

log = logging.getLogger(__name__)

CANCELLED = int(grpc.StatusCode.CANCELLED.value[0])  # not an error kind: the client left
DEADLINE_EXCEEDED = wire_code(ErrorKind.DEADLINE_EXCEEDED)
INVALID_ARGUMENT = wire_code(ErrorKind.INVALID_ARGUMENT)
UNAVAILABLE = wire_code(ErrorKind.UNAVAILABLE)
_READY_WAIT_S = 0.01  # a fetch of what is already queued (the server answers at once)


class Signal:
    """Wake every waiter when something changed (capacity, new jobs)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


@dataclass
class Held:
    """A fetched job this broker holds (buffered or running)."""

    run: JobRun
    msg: Any
    key: str
    task: asyncio.Task[None] | None = None
    twins: list[Any] = field(default_factory=list)  # later deliveries of the same job

    @property
    def msgs(self) -> list[Any]:
        return [self.msg, *self.twins]


class _Reply:
    def __init__(self, queue: JobQueue, subject: str) -> None:
        self._queue, self._subject = queue, subject

    async def send(self, chunk: broker_pb2.JobChunk) -> None:
        await self._queue.reply(self._subject, chunk)


class TierWorker:
    def __init__(self, tier: str, addresses: list[str], queue: JobQueue,
                 backends: GrpcBackends, settings: BrokerSettings,
                 metrics: BrokerMetrics) -> None:
        self.tier = tier
        self.replicas = [Replica(a, max_slots=settings.max_slots_per_replica)
                         for a in addresses]
        self.queue, self.backends, self.s, self.m = queue, backends, settings, metrics
        self.scheduler: Scheduler[Held] = Scheduler(settings.batch_share)
        self.running: dict[str, Held] = {}
        self.changed = Signal()
        self.cancelled: dict[str, float] = {}
        self.done: OrderedDict[str, None] = OrderedDict()  # recently completed job ids
        self.fetching = True
        self.broker_id = uuid.uuid4().hex[:12]
        self._unhealthy_since: float | None = None  # since when no replica is healthy
        self.stats = {"completed": 0, "terminated": 0, "redeliveries": 0}
        self._subs: dict[JobClass, Any] = {}
        for r in self.replicas:
            metrics.in_flight.labels(tier, r.address).set_function(
                functools.partial(getattr, r, "local_in_flight"))

    async def prepare(self, timeout_s: float = 60.0) -> None:
        """Create the stream and the shared consumers (retried through leader elections)."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                await self.queue.ensure(self.tier)
                self._subs = {c: await self.queue.consumer(self.tier, c) for c in CLASSES}
                return
            except Exception as exc:
                if time.monotonic() > end:
                    raise
                log.warning("tier %s: stream or consumers not ready (%r); retrying",
                            self.tier, exc)
                await asyncio.sleep(0.5)

    async def run(self) -> None:
        """Pull, dispatch and heartbeat until cancelled (after `prepare()`)."""
        async with asyncio.TaskGroup() as group:
            for c in CLASSES:
                group.create_task(self._forever(self._puller(c)))
            for loop in (self._dispatch, self._heartbeat, self._beacon, self._depth):
                group.create_task(self._forever(loop))

    async def _forever(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; an unexpected error is logged and the loop restarted."""
        while True:
            try:
                await loop()
            except Exception:
                log.exception("tier %s: loop failed; restarting it", self.tier)
                await asyncio.sleep(0.5)

    async def drain(self) -> None:
        """Stop fetching, give buffered jobs back, let running ones finish."""
        self.fetching = False
        for held in self.scheduler.remove(lambda h: True):
            await self._settle_all(held.item, "nak")
        self.changed.fire()
        while self.running:
            await self.changed.wait(0.5)

    # ---- pulling ------------------------------------------------------------------------
    def _puller(self, job_class: JobClass) -> Callable[[], Awaitable[None]]:
        """One pull round of `job_class`, reading its consumer when it runs."""
        async def pull() -> None:
            await self._pull(job_class, self._subs[job_class])
        return pull

    async def _pull(self, job_class: JobClass, sub: Any) -> None:
        while True:
            if not self.fetching:
                await self.changed.wait(1.0)
                continue
            room = total_free(self.replicas) + self.s.lookahead - self.scheduler.buffered(
                job_class)
            if room <= 0:
                await self.changed.wait(self.s.pull_wait_s)
                continue
            # Long-poll for one job and start it at once, then take what else is queued
            # without waiting: a pull for n > 1 would hold the first job until n arrive.
            msgs = await self.queue.fetch(sub, 1, self.s.pull_wait_s)
            if not msgs:
                continue
            await self._admit(msgs[0], job_class)
            self.changed.fire()
            more = min(room, self.s.max_batch) - 1
            if more > 0:
                rest = await self.queue.fetch(sub, more, _READY_WAIT_S)
                for msg in rest:
                    await self._admit(msg, job_class)
                msgs += rest
                self.changed.fire()
            self.m.fetched_batch.labels(self.tier).observe(len(msgs))

    async def _admit(self, msg: Any, job_class: JobClass) -> None:
        if not self.fetching:  # arrived on a pull made before the drain began
            await settle(msg, "nak")
            return
        attempt = delivery_count(msg)
        job: broker_pb2.GenerateJob | None = None
        try:
            job = broker_pb2.GenerateJob.FromString(msg.data)
            run = check_job(job, self.tier, attempt)
        except (DecodeError, FieldError) as exc:
            log.error("poison job on %s (%s) terminated: %s", msg.subject,
                      job.job_id if job else "undecodable", exc)
            self._count_term("poison")
            if job is not None and job.reply_subject and " " not in job.reply_subject:
                await self.queue.reply(job.reply_subject, broker_pb2.JobChunk(
                    job_id=job.job_id, error=broker_pb2.JobError(
                        code=INVALID_ARGUMENT, message=getattr(exc, "problem", str(exc)),
                        field=getattr(exc, "field", "")),
                    finish_reason=common_pb2.FINISH_REASON_ERROR))
            await settle(msg, "term")
            return
        if attempt > 1:
            self.m.redeliveries.labels(self.tier).inc()
            self.stats["redeliveries"] += 1
        if run.job_id in self.done or (attempt > 1 and await self.queue.was_done(run.job_id)):
            log.warning("job %s delivered again after it completed: acked, not run", run.job_id)
            await settle(msg, "ack")
            return
        held_now = self.running.get(run.job_id) or next(
            (q.item for q in self.scheduler if q.item.run.job_id == run.job_id), None)
        if held_now is not None:  # redelivered while we still hold it (consumer failover)
            held_now.twins.append(msg)
            return
        if self.cancelled.pop(run.job_id, None) is not None:
            await self._drop(Held(run, msg, ""), CANCELLED, "cancelled before it started")
            return
        if run.expired():
            await self._drop(Held(run, msg, ""), DEADLINE_EXCEEDED, "deadline passed in queue")
            return
        if self.down():
            await self._drop(Held(run, msg, ""), UNAVAILABLE, self.down_reason())
            return
        conv = job.conversation
        key = affinity_key(job.affinity_key, conv.system_prompt,
                           conv.turns[0].content if conv.turns else "",
                           self.s.affinity_min_chars)
        self.scheduler.push(run.job_class, job.tenant, Held(run, msg, key))
        await self._send_heartbeat(run)  # the client knows at once which broker holds it

    # ---- dispatching --------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            if not len(self.scheduler) or total_free(self.replicas) == 0:
                await self.changed.wait(0.5)
                continue
            queued = self.scheduler.pop()
            if queued is None:
                continue
            held = queued.item
            if held.run.expired():
                await self._drop(held, DEADLINE_EXCEEDED, "deadline passed in queue")
                continue
            replica, hit = POLICIES[self.s.dispatch](self.replicas, held.key)
            if replica is None:  # capacity vanished between the check and the pick
                self.scheduler.push(queued.job_class, queued.tenant, held)
                continue
            self.m.dispatches.labels(self.tier).inc()
            if hit:
                self.m.affinity_hits.labels(self.tier).inc()
            sent = held.msg.metadata.timestamp
            if sent is not None:
                self.m.queue_wait.labels(self.tier, held.run.job_class).observe(
                    max(0.0, time.time() - sent.timestamp()))
            replica.local_in_flight += 1  # claimed now; run_job holds its own count
            self.running[held.run.job_id] = held
            held.task = asyncio.create_task(self._run(held, replica))

    async def _run(self, held: Held, replica: Replica) -> None:
        run = held.run
        replica.local_in_flight -= 1
        outcome = Outcome.RETRY
        try:
            with continued_trace(getattr(held.msg, "headers", None), "broker.job"):
                outcome = await run_job(run, replica, self.backends,
                                        _Reply(self.queue, run.job.reply_subject),
                                        self._choose, self.s.max_attempts)
        except asyncio.CancelledError:
            outcome = Outcome.CANCELLED
            await self.queue.reply(run.job.reply_subject,
                                   run.error(CANCELLED, "cancelled by the client"))
        except Exception:
            log.exception("job %s failed unexpectedly", run.job_id)
        finally:
            self.running.pop(run.job_id, None)
            self.changed.fire()
        if outcome is Outcome.RETRY and self.down():  # no replica to go back to: say so
            await self._drop(held, UNAVAILABLE, self.down_reason())
            return
        await self._settle(held, outcome)

    async def _settle(self, held: Held, outcome: Outcome) -> None:
        run = held.run
        if outcome is Outcome.DONE:
            self.done[run.job_id] = None
            while len(self.done) > 100_000:
                self.done.popitem(last=False)
            await self.queue.mark_done(run.job_id)
            await self._settle_all(held, "ack")
            self.m.completed.labels(self.tier).inc()
            self.stats["completed"] += 1
        elif outcome is Outcome.RETRY:
            self.m.failovers.labels(self.tier).inc()
            if run.tokens and await self._republish(run):
                await self._settle_all(held, "ack")  # the continuation replaces it
            else:
                await self._settle_all(held, "nak", self.s.nak_delay_s)
        else:
            self._count_term(outcome.value)
            await self._settle_all(held, "term")

    async def _settle_all(self, held: Held, action: str, delay: float | None = None) -> None:
        await asyncio.gather(*(settle(m, action, delay) for m in held.msgs))

    async def _republish(self, run: JobRun) -> bool:
        job = broker_pb2.GenerateJob()
        job.CopyFrom(run.job)
        job.partial_token_ids[:] = run.tokens
        job.partial_text = run.text
        return await self.queue.republish(job, run.job_class)

    async def _choose(self, run: JobRun, tried: set[str]) -> Replica | None:
        """A replica for a failed-over job: an untried one first, waiting a while for room."""
        limit = self.s.failover_wait_s
        left = run.remaining()
        end = time.monotonic() + (limit if left is None else min(limit, left))
        while time.monotonic() < end and not self.down():
            fresh = [r for r in self.replicas if r.address not in tried]
            replica, _ = pick(fresh)
            if replica is None:
                replica, _ = pick(self.replicas)
            if replica is not None:
                return replica
            await self.changed.wait(min(0.2, max(0.0, end - time.monotonic())))
        return None

    async def _drop(self, held: Held, code: int, why: str) -> None:
        await self.queue.reply(held.run.job.reply_subject, held.run.error(code, why))
        self._count_term({DEADLINE_EXCEEDED: "expired", UNAVAILABLE: "tier_down"}.get(
            code, "cancelled"))
        await self._settle_all(held, "term")

    # ---- tier health ----------------------------------------------------------------------
    def down(self) -> bool:
        """No replica has been healthy for `down_after_s` (so none is coming back soon)."""
        since = self._unhealthy_since
        return since is not None and time.monotonic() - since >= self.s.down_after_s

    def down_reason(self) -> str:
        return (f"tier {self.tier!r}: no healthy backend replica "
                f"({len(self.replicas)} configured)")

    def _track_health(self) -> None:
        if any(r.healthy for r in self.replicas):
            self._unhealthy_since = None
        elif self._unhealthy_since is None:
            self._unhealthy_since = time.monotonic()

    def _count_term(self, reason: str) -> None:
        self.m.terminations.labels(self.tier, reason).inc()
        self.stats["terminated"] += 1

    # ---- cancel, heartbeat, depth ----------------------------------------------------------
    async def cancel(self, job_id: str) -> None:
        held = self.running.get(job_id)
        if held is not None and held.task is not None:
            held.task.cancel()
            return
        for queued in self.scheduler.remove(lambda h: h.run.job_id == job_id):
            await self._drop(queued.item, CANCELLED, "cancelled before it started")
            return
        now = time.monotonic()
        self.cancelled = {k: t for k, t in self.cancelled.items() if t > now}
        self.cancelled[job_id] = now + self.s.cancel_memory_s

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.s.ack_wait_s / 3)
            for held in [q.item for q in self.scheduler] + list(self.running.values()):
                for msg in held.msgs:
                    await settle(msg, "progress")

    async def _beacon(self) -> None:
        """Announce the tier and send every held job a heartbeat, each `heartbeat_s`;
        while the tier is down, fail the jobs buffered here."""
        was_down = False
        while True:
            self._track_health()
            down = self.down()
            if down and not was_down:
                log.warning("%s for %.1f s: failing its jobs", self.down_reason(),
                            self.s.down_after_s)
                for queued in self.scheduler.remove(lambda h: True):
                    await self._drop(queued.item, UNAVAILABLE, self.down_reason())
                self.changed.fire()
            elif was_down and not down:
                log.info("tier %s: a backend replica is healthy again", self.tier)
            was_down = down
            beacon = broker_pb2.TierBeacon(
                tier=self.tier, region=self.queue.limits.region, broker_id=self.broker_id,
                replicas=len(self.replicas),
                healthy_replicas=sum(r.healthy for r in self.replicas),
                free_slots=total_free(self.replicas), running=len(self.running),
                buffered=len(self.scheduler), down=down)
            await self.queue.announce(self.tier, beacon)
            for held in [q.item for q in self.scheduler] + list(self.running.values()):
                await self._send_heartbeat(held.run)
            await asyncio.sleep(self.s.heartbeat_s)

    async def _send_heartbeat(self, run: JobRun) -> None:
        await self.queue.reply(run.job.reply_subject, broker_pb2.JobChunk(
            job_id=run.job_id, attempt=run.attempt, heartbeat=True, broker_id=self.broker_id))

    async def _depth(self) -> None:
        while True:
            for c in CLASSES:
                self.m.queue_depth.labels(self.tier, c).set(await self.queue.pending(self.tier, c))
                self.m.buffered.labels(self.tier, c).set(self.scheduler.buffered(c))
            await asyncio.sleep(1.0)
