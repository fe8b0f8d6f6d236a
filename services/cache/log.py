"""The cache service's event log on NATS JetStream: the adapter behind `cache.core.EntryLog`.

Every store, eviction and invalidation is published to one stream (its max
age is the entry TTL, its size bounded). A replica subscribes with an ordered
consumer from the first retained message and applies every event, its own
included, in stream sequence order: that one order is what makes replicas
converge. It applies everything up to the stream's last sequence before it
reports ready, then keeps following, so a restart rebuilds what was there.

Writes are durable before they are answered: `append` returns the stream
sequence only once JetStream has acknowledged the event. While NATS is
unreachable the setting `when_unavailable` decides: "refuse" raises
`LogUnavailable` (UNAVAILABLE), "buffer" queues the event in a bounded buffer
and returns None (the caller answers "not durable"); a full buffer refuses
(`LogFull`, RESOURCE_EXHAUSTED, counted in `refused`) and never drops. One
publisher sends the buffer in order once NATS is back.

Each event's id is its `Nats-Msg-Id`, and the stream's duplicate window is its
whole retention, so a publish retried at any time while the event is kept is
stored once; replicas also skip event ids they have applied, remembered for
as long as the stream keeps events. An event the stream keeps rejecting, or
one a replica cannot read or apply, goes to a dead-letter subject (its own
small stream) with a warning, and stops blocking the events behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from cache.entries import Event
from core.errors import FailedPrecondition, Overloaded, Unavailable

log = logging.getLogger(__name__)

WhenUnavailable = Literal["buffer", "refuse"]

# Failures that say nothing about the event itself: NATS is away or slow.
_TRANSIENT = (nats.errors.TimeoutError, TimeoutError, nats.errors.ConnectionClosedError,
              nats.errors.OutboundBufferLimitError, nats.errors.NoRespondersError,
              nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
              nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError)
_REJECTED = -1  # what a dead-lettered event's future resolves to


class LogUnavailable(Unavailable):
    """The event log cannot take a write now and settings say refuse (UNAVAILABLE)."""


class LogFull(Overloaded):
    """NATS is unreachable and the write buffer is full (RESOURCE_EXHAUSTED)."""


class LogRejected(FailedPrecondition):
    """The stream kept rejecting this event (FAILED_PRECONDITION: a retry fails the same
    way, e.g. an entry over the stream's size limit); it went to the dead-letter subject."""


def describe(event: Event) -> str:
    """One log line's worth of an event (no prompt or answer text)."""
    return (f"{event.op} id={event.id} tenant={event.tenant!r} ns={event.namespace!r} "
            f"entry={event.entry_id!r}")


@dataclass
class _Outgoing:
    event_id: str
    data: bytes
    text: str
    done: asyncio.Future[int]
    tries: int = 0
    abandoned: bool = False  # refused to its caller: never retried


@dataclass
class LogCounters:
    """What the service exports as metrics."""

    refused: int = 0          # writes refused because the buffer was full
    not_durable: int = 0      # writes answered before an ack (buffered)
    dead_letters: int = 0     # events sent to the dead-letter subject
    rejections: int = 0       # publishes the stream refused (each try)
    errors: list[str] = field(default_factory=list)  # last async NATS errors (bounded)


class JetStreamLog:
    """`EntryLog` on JetStream; an async context manager that replays, then follows."""

    def __init__(self, url: str, apply: Callable[[Event], object], stream: str = "CMESH_CACHE",
                 subject: str = "cmesh.cache.log", max_age_s: float = 86_400.0,
                 max_bytes: int = 1 << 30, max_pending: int = 10_000,
                 when_unavailable: WhenUnavailable = "buffer", retry_s: float = 0.5,
                 publish_timeout_s: float = 2.0, replay_timeout_s: float = 60.0,
                 max_tries: int = 5, dead_subject: str = "", max_event_bytes: int = -1,
                 apply_timeout_s: float = 5.0,
                 on_rejected: Callable[[Event], object] | None = None,
                 connect_options: Mapping[str, Any] | None = None) -> None:
        self.url, self.stream, self.subject = url, stream, subject
        self._connect_options = dict(connect_options or {})  # credentials, inbox prefix
        self.dead_subject = dead_subject or f"{subject}.dead"
        self._apply = apply
        self._on_rejected = on_rejected  # told when an event it appended is dead-lettered
        self.max_age_s, self.max_bytes, self.max_event_bytes = max_age_s, max_bytes, max_event_bytes
        self.max_pending, self.max_tries = max_pending, max_tries
        self.when_unavailable = when_unavailable
        self.retry_s, self.publish_timeout_s = retry_s, publish_timeout_s
        self.replay_timeout_s, self.apply_timeout_s = replay_timeout_s, apply_timeout_s
        self.counters = LogCounters()
        self.last_seq = 0
        self.replayed = asyncio.Event()
        self._out: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self._seen: OrderedDict[str, float] = OrderedDict()  # event id -> when applied
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._up = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._resubscribe_needed = False
        self._error_kinds: set[str] = set()

    # ---- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> JetStreamLog:
        try:
            await self._connect()
            await self._replay()
        except Exception as exc:  # NATS down at start: serve from memory, catch up later
            log.warning("event log unavailable at start (%s); serving from memory", exc)
            self._resubscribe_needed = True
        self._tasks.append(asyncio.create_task(self._publisher(), name="cache-log-publisher"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None:
            if self._out and self.connected:
                try:
                    await self._flush()
                except Exception as exc:
                    log.warning("event log: flush at shutdown failed (%s)", exc)
            if self._out:
                log.warning("event log: %d buffered events never reached JetStream and are "
                            "lost: %s", len(self._out), [o.text for o in list(self._out)[:5]])
            with contextlib.suppress(Exception):
                await self._nc.close()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    @property
    def degraded(self) -> bool:
        """True while writes cannot reach the stream (or have not caught up)."""
        return not self.connected or bool(self._out) or self._resubscribe_needed

    @property
    def pending(self) -> int:
        """Writes waiting for a JetStream ack."""
        return len(self._out)

    # ---- writing --------------------------------------------------------------------
    async def append(self, event: Event) -> int | None:
        """Publish `event`; its stream sequence once acknowledged, None if only buffered.

        Raises `LogUnavailable` (refuse mode, no ack in time), `LogFull` (buffer mode,
        buffer full) or `LogRejected` (the stream refused it `max_tries` times).
        """
        if self.when_unavailable == "refuse" and not self.connected:
            raise LogUnavailable("event log unreachable; writes are refused by settings")
        if len(self._out) >= self.max_pending:
            self.counters.refused += 1
            log.warning("event log: write buffer full (%d events), refusing %s",
                        len(self._out), describe(event))
            raise LogFull(f"write buffer full ({self.max_pending} events) while the event "
                          "log is unreachable")
        item = _Outgoing(event.id, event.to_json(), describe(event),
                         asyncio.get_running_loop().create_future())
        self._out.append(item)
        self._empty.clear()
        self._wake.set()
        if not self.connected and self.when_unavailable == "buffer":
            self.counters.not_durable += 1
            return None
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                seq = await asyncio.shield(item.done)
        except TimeoutError:
            if self.when_unavailable == "buffer":
                self.counters.not_durable += 1
                return None
            item.abandoned = True
            if item is not self._inflight:
                with contextlib.suppress(ValueError):
                    self._out.remove(item)
                if not self._out:
                    self._empty.set()
            raise LogUnavailable(f"no JetStream ack within {self.publish_timeout_s} s"
                                 " (the event may still be stored, once)") from None
        if seq == _REJECTED:
            raise LogRejected(f"the stream rejected {item.text}; sent to {self.dead_subject}")
        return seq

    async def caught_up(self, seq: int) -> bool:
        """Wait until this replica has applied the stream through `seq` (False on timeout)."""
        if self.last_seq >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        try:
            async with asyncio.timeout(self.apply_timeout_s):
                await fut
            return True
        except TimeoutError:
            return False

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the NATS connection is up (False on timeout)."""
        return await _wait_set(self._up, timeout) and self.connected

    async def drained(self, timeout: float) -> bool:
        """Wait until every buffered write has been acknowledged (False on timeout)."""
        return await _wait_set(self._empty, timeout)

    async def _flush(self) -> None:
        """Publish the buffer in order; stop at the first transient failure."""
        try:
            await self._publish_buffer()
        finally:
            if not self._out:
                self._empty.set()

    async def _publish_buffer(self) -> None:
        while self._out and self.connected:
            item = self._inflight = self._out[0]
            try:
                ack = await self._js.publish(self.subject, item.data,
                                             timeout=self.publish_timeout_s,
                                             headers={"Nats-Msg-Id": item.event_id})
            except _TRANSIENT:
                if item.abandoned and self._out and self._out[0] is item:
                    self._out.popleft()  # its caller was told UNAVAILABLE: do not retry it
                raise
            except Exception as exc:  # the stream (or client) refuses this very event
                item.tries += 1
                self.counters.rejections += 1
                log.warning("event log: publish of %s rejected (try %d of %d): %s",
                            item.text, item.tries, self.max_tries, exc)
                if item.tries < self.max_tries:
                    raise
                self._out.popleft()
                await self._dead_letter(item.data, item.event_id, f"publish rejected: {exc}")
                if not item.done.done():
                    item.done.set_result(_REJECTED)
                if self._on_rejected is not None:
                    self._on_rejected(Event.from_json(item.data))
                continue
            finally:
                self._inflight = None
            if self._out and self._out[0] is item:
                self._out.popleft()
            if not item.done.done():
                item.done.set_result(ack.seq)

    async def _publisher(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel of
            # a shutdown when the wake-up lands at the same moment (seen here as a hang).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if self._nc is None:
                    await self._connect()
                if self._resubscribe_needed and self.connected:
                    await self._ensure_stream()
                    await self._subscribe()
                    self._resubscribe_needed = False
                    self.replayed.set()
                if self._out and self.connected:
                    await self._flush()
            except Exception as exc:
                log.debug("event log still unavailable: %s", exc)

    async def _dead_letter(self, data: bytes, event_id: str, reason: str) -> None:
        self.counters.dead_letters += 1
        headers = {"Nats-Msg-Id": f"dead-{event_id}", "Cmesh-Reason": reason[:500]}
        try:
            await self._js.publish(self.dead_subject, data, timeout=self.publish_timeout_s,
                                   headers=headers)
        except Exception as exc:
            try:  # too big for any stream: keep at least what it was and why
                await self._js.publish(self.dead_subject, data[:1024],
                                       timeout=self.publish_timeout_s, headers=headers)
            except Exception:
                log.warning("event log: dead-lettering %s failed (%s); dropped: %r",
                            event_id, exc, data[:300])

    # ---- reading --------------------------------------------------------------------
    async def _connect(self) -> None:
        async def reconnected() -> None:
            self._error_kinds.clear()
            self._up.set()
            log.warning("event log: reconnected to NATS; resuming after sequence %d",
                        self.last_seq)
            self._resubscribe_needed = True
            self._wake.set()

        async def disconnected() -> None:
            self._up.clear()
            log.warning("event log: disconnected from NATS (%d writes pending)", len(self._out))

        async def on_error(exc: Exception) -> None:
            # Once per kind of error until the next reconnect: a down server fails every
            # reconnect attempt, and one line says so.
            kind = type(exc).__name__
            level = logging.DEBUG if kind in self._error_kinds else logging.WARNING
            self._error_kinds.add(kind)
            log.log(level, "event log: NATS error: %r", exc)
            self.counters.errors[:] = [*self.counters.errors[-9:], repr(exc)]

        # pending_size=0: no hidden client-side buffer; our own bounded one is the only one.
        self._nc = await nats.connect(self.url, connect_timeout=2, reconnect_time_wait=0.5,
                                      max_reconnect_attempts=-1, reconnected_cb=reconnected,
                                      disconnected_cb=disconnected, error_cb=on_error,
                                      pending_size=0, name="cmesh-cache",
                                      **self._connect_options)
        self._js = self._nc.jetstream()
        self._up.set()
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        # The duplicate window is the whole retention: a retried publish is stored once
        # for as long as the stream could still hold the first copy.
        for config in (
            api.StreamConfig(name=self.stream, subjects=[self.subject], max_age=self.max_age_s,
                             max_bytes=self.max_bytes, max_msg_size=self.max_event_bytes,
                             storage=api.StorageType.FILE, duplicate_window=self.max_age_s),
            api.StreamConfig(name=f"{self.stream}_DEAD", subjects=[self.dead_subject],
                             max_age=self.max_age_s, max_bytes=max(self.max_bytes // 16, 1 << 20),
                             storage=api.StorageType.FILE, duplicate_window=self.max_age_s),
        ):
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)

    async def _subscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self.last_seq:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=self.last_seq + 1)
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
        self._sub = await self._js.subscribe(self.subject, cb=self._on_msg, config=config,
                                             ordered_consumer=True, stream=self.stream)

    async def _replay(self) -> None:
        info = await self._js.stream_info(self.stream)
        target = info.state.last_seq
        await self._subscribe()
        if info.state.messages and not await self._wait_applied(target, self.replay_timeout_s):
            raise TimeoutError(f"replay stopped at {self.last_seq} of {target}")
        self.replayed.set()

    async def _wait_applied(self, seq: int, timeout: float) -> bool:
        saved, self.apply_timeout_s = self.apply_timeout_s, timeout
        try:
            return await self.caught_up(seq)
        finally:
            self.apply_timeout_s = saved

    async def _on_msg(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return
        event_id = (msg.headers or {}).get("Nats-Msg-Id", f"seq-{seq}")
        try:
            event = Event.from_json(msg.data)
            event_id = event.id or event_id
            if event_id not in self._seen:
                self._apply(event)
        except Exception as exc:  # applying is deterministic: a retry fails the same way
            log.warning("event log: cannot apply event %s at sequence %d (%r): %r",
                        event_id, seq, exc, msg.data[:300])
            await self._dead_letter(msg.data, event_id, f"apply failed at {seq}: {exc!r}")
        self._remember(event_id)
        self._advance(seq)

    def _remember(self, event_id: str) -> None:
        now = time.monotonic()
        self._seen[event_id] = now
        self._seen.move_to_end(event_id)
        while self._seen:
            oldest, when = next(iter(self._seen.items()))
            if now - when <= self.max_age_s:
                break
            del self._seen[oldest]

    def _advance(self, seq: int) -> None:
        self.last_seq = seq
        while self._waiters and self._waiters[0][0] <= seq:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)


async def _wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set; False when `timeout` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
