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

Regions (docs/regions.md): with `region` set, the stream is that region's own
(placed in its NATS cluster) and sources every other region's stream, filtered
to that region's own subject; the follower reads all of them in this stream's
one order. Events carry the region that wrote them and when, so a replica
exports its replication lag per source region. Peer logs missing at start are
created bare first, and sources that stall after an outage are restarted, since
nats-server itself retries them only after tens of seconds.

One class a job, wired by constructor (`open_log` does it): `Connection` (the
NATS connection and the streams), `DeadLetters`, `WriteBuffer` (the bounded
buffer and its in-order publishing), `Follower` (replay, follow, apply to the
replica's `EventSink`, append what the sink decided) and `JetStreamLog`, the
`EntryLog` over them that owns the lifecycle and the publisher task.
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
from cache.replica import EventSink
from core.errors import FailedPrecondition, Overloaded, Unavailable

log = logging.getLogger(__name__)

WhenUnavailable = Literal["buffer", "refuse"]

# Failures that say nothing about the event itself: NATS is away or slow.
_TRANSIENT = (nats.errors.TimeoutError, TimeoutError, nats.errors.ConnectionClosedError,
              nats.errors.OutboundBufferLimitError, nats.errors.NoRespondersError,
              nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
              nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError)
_REJECTED = -1  # what a dead-lettered event's future resolves to
REGION_HEADER = "Cmesh-Region"  # the region whose replica published the event
SENT_AT_HEADER = "Cmesh-Sent-At"  # unix time it was handed to the log there


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
    headers: dict[str, str]
    tries: int = 0
    abandoned: bool = False  # refused to its caller: never retried


@dataclass
class LogCounters:
    """What the service exports as metrics."""

    refused: int = 0          # writes refused because the buffer was full
    not_durable: int = 0      # writes answered before an ack (buffered)
    dead_letters: int = 0     # events sent to the dead-letter subject
    rejections: int = 0       # publishes the stream refused (each try)
    lag_s: dict[str, float] = field(default_factory=dict)  # source region -> last lag
    replicated: dict[str, int] = field(default_factory=dict)  # source region -> applied
    errors: list[str] = field(default_factory=list)  # last async NATS errors (bounded)


@dataclass(frozen=True)
class PeerLog:
    """Another region's cache log: its region, stream and the subject its replicas write."""

    region: str
    stream: str
    subject: str


@dataclass(frozen=True)
class LogConfig:
    """Where the log lives and how it behaves (the service fills it from its settings)."""

    url: str
    stream: str = "CMESH_CACHE"
    subject: str = "cmesh.cache.log"
    dead_subject: str = ""  # default: `<subject>.dead`
    max_age_s: float = 86_400.0
    max_bytes: int = 1 << 30
    max_event_bytes: int = -1
    max_pending: int = 10_000
    when_unavailable: WhenUnavailable = "buffer"
    retry_s: float = 0.5
    publish_timeout_s: float = 2.0
    replay_timeout_s: float = 60.0
    max_tries: int = 5
    apply_timeout_s: float = 5.0
    connect_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra `nats.connect` options: the service's credentials and inbox prefix."""
    region: str = ""
    """This replica's region: its streams are placed in that NATS cluster and its events
    carry it (`Cmesh-Region`), so replicas elsewhere measure their replication lag."""
    follow_subject: str = ""
    """What the follower reads from the stream (default `subject`); with sources, a
    wildcard that also takes the events sourced from the other regions."""
    sources: tuple[PeerLog, ...] = ()
    """Each other region's log this stream sources; the subject filter takes only that
    region's own events, so nothing comes round twice."""
    source_check_s: float = 5.0
    """How often the sources are checked; one silent this long is restarted."""

    @property
    def followed(self) -> str:
        """The subject filter of the follower."""
        return self.follow_subject or self.subject

    @property
    def dead(self) -> str:
        """The dead-letter subject."""
        return self.dead_subject or f"{self.subject}.dead"


class Connection:
    """The NATS connection and the two streams; tells `wake` when it reconnects."""

    def __init__(self, config: LogConfig, counters: LogCounters, wake: asyncio.Event) -> None:
        self.config = config
        self.counters = counters
        self._wake = wake
        self.nc: Any = None
        self.js: Any = None
        self.up = asyncio.Event()
        self.stale = False  # the subscription must be renewed (reconnect, or down at start)
        self._error_kinds: set[str] = set()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up."""
        return self.nc is not None and self.nc.is_connected

    async def connect(self) -> None:
        """Connect and make sure both streams exist as configured."""
        async def reconnected() -> None:
            self._error_kinds.clear()
            self.up.set()
            log.warning("event log: reconnected to NATS; resuming the stream")
            self.stale = True
            self._wake.set()

        async def disconnected() -> None:
            self.up.clear()
            log.warning("event log: disconnected from NATS")

        async def on_error(exc: Exception) -> None:
            # Once per kind of error until the next reconnect: a down server fails every
            # reconnect attempt, and one line says so.
            kind = type(exc).__name__
            level = logging.DEBUG if kind in self._error_kinds else logging.WARNING
            self._error_kinds.add(kind)
            log.log(level, "event log: NATS error: %r", exc)
            self.counters.errors[:] = [*self.counters.errors[-9:], repr(exc)]

        # pending_size=0: no hidden client-side buffer; our own bounded one is the only one.
        # A comma-separated url is a cluster (a region of three): any server will do.
        servers = [u.strip() for u in self.config.url.split(",") if u.strip()]
        self.nc = await nats.connect(servers=servers, connect_timeout=2,
                                     reconnect_time_wait=0.5, max_reconnect_attempts=-1,
                                     reconnected_cb=reconnected, disconnected_cb=disconnected,
                                     error_cb=on_error, pending_size=0, name="cmesh-cache",
                                     **self.config.connect_options)
        self.js = self.nc.jetstream()
        self.up.set()
        await self.ensure_streams()

    async def ensure_streams(self) -> None:
        """Create or update the event stream and its dead-letter stream.

        With peer regions, first create each peer's log where it is missing, bare (no
        sources): a source whose stream does not exist yet is retried by the server only
        after about 40 s (measured, nats-server 2.15), so every region's log exists before
        any region adds its sources. The peer's own replicas add its sources later.
        """
        c = self.config
        peers_js = self.nc.jetstream(timeout=c.publish_timeout_s)
        for peer in c.sources:
            try:
                await peers_js.add_stream(self._log_stream(peer.stream, peer.subject,
                                                           peer.region))
            except Exception as exc:  # there already (configured by its region), or down
                log.debug("event log: peer log %s not created here: %s", peer.stream, exc)
        sources = [api.StreamSource(name=p.stream, filter_subject=p.subject)
                   for p in c.sources] or None
        own = self._log_stream(c.stream, c.subject, c.region, sources)
        placement = own.placement
        # The duplicate window is the whole retention: a retried publish is stored once
        # for as long as the stream could still hold the first copy.
        for config in (
            own,
            api.StreamConfig(name=f"{c.stream}_DEAD", subjects=[c.dead],
                             max_age=c.max_age_s, max_bytes=max(c.max_bytes // 16, 1 << 20),
                             storage=api.StorageType.FILE, duplicate_window=c.max_age_s,
                             placement=placement),
        ):
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)

    def _log_stream(self, name: str, subject: str, region: str,
                    sources: list[api.StreamSource] | None = None) -> api.StreamConfig:
        c = self.config
        return api.StreamConfig(name=name, subjects=[subject], max_age=c.max_age_s,
                                max_bytes=c.max_bytes, max_msg_size=c.max_event_bytes,
                                storage=api.StorageType.FILE, duplicate_window=c.max_age_s,
                                placement=api.Placement(cluster=region) if region else None,
                                sources=sources)

    async def restart_stalled_sources(self, stalled_after_s: float) -> list[str]:
        """Restart this stream's sources that have been silent `stalled_after_s` (or
        failed) while their stream answers; returns the streams restarted.

        After an outage nats-server retries a broken source only after 10-40 s
        (measured, 2.15); removing the sources and adding them back starts them at
        once, from the last sequence this stream holds of each. Nothing is stored twice
        either way: each event keeps its `Nats-Msg-Id` and the duplicate window is the
        whole retention.
        """
        c = self.config
        info = await self.js.stream_info(c.stream)
        stalled = {s.name for s in info.sources or []
                   if s.error or s.active is None or s.active < 0
                   or s.active > stalled_after_s * 1e9}
        peers_js = self.nc.jetstream(timeout=c.publish_timeout_s)
        reachable = []
        for name in sorted(stalled):
            with contextlib.suppress(Exception):  # origin still away: nothing to restart
                await peers_js.stream_info(name)
                reachable.append(name)
        if reachable:
            own = self._log_stream(c.stream, c.subject, c.region)
            await self.js.update_stream(own)  # without sources...
            await self.js.update_stream(self._log_stream(  # ...and with them again
                c.stream, c.subject, c.region,
                [api.StreamSource(name=p.stream, filter_subject=p.subject)
                 for p in c.sources]))
            log.warning("event log: restarted stalled sources %s", reachable)
        return reachable

    async def close(self) -> None:
        """Close the connection (errors ignored: shutting down)."""
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


class DeadLetters:
    """Events that cannot be published or applied, kept on their own subject."""

    def __init__(self, connection: Connection, counters: LogCounters) -> None:
        self._conn = connection
        self.counters = counters

    async def send(self, data: bytes, event_id: str, reason: str) -> None:
        """Dead-letter `data` (truncated if even that fails) with why; never raises."""
        self.counters.dead_letters += 1
        headers = {"Nats-Msg-Id": f"dead-{event_id}", "Cmesh-Reason": reason[:500]}
        subject, timeout = self._conn.config.dead, self._conn.config.publish_timeout_s
        try:
            await self._conn.js.publish(subject, data, timeout=timeout, headers=headers)
        except Exception as exc:
            try:  # too big for any stream: keep at least what it was and why
                await self._conn.js.publish(subject, data[:1024], timeout=timeout,
                                            headers=headers)
            except Exception:
                log.warning("event log: dead-lettering %s failed (%s); dropped: %r",
                            event_id, exc, data[:300])


class WriteBuffer:
    """The bounded write buffer, published in order; refuses when full, never drops."""

    def __init__(self, connection: Connection, dead_letters: DeadLetters, counters: LogCounters,
                 wake: asyncio.Event, on_rejected: Callable[[Event], object]) -> None:
        self._conn = connection
        self.config = connection.config
        self._dead = dead_letters
        self.counters = counters
        self._wake = wake
        self._on_rejected = on_rejected  # told when an event it was given is dead-lettered
        self._out: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self.empty = asyncio.Event()
        self.empty.set()

    @property
    def pending(self) -> int:
        """Writes waiting for a JetStream ack."""
        return len(self._out)

    def texts(self, n: int) -> list[str]:
        """The first `n` buffered events, described."""
        return [o.text for o in list(self._out)[:n]]

    async def append(self, event: Event) -> int | None:
        """See `JetStreamLog.append`."""
        c = self.config
        if c.when_unavailable == "refuse" and not self._conn.connected:
            raise LogUnavailable("event log unreachable; writes are refused by settings")
        if len(self._out) >= c.max_pending:
            self.counters.refused += 1
            log.warning("event log: write buffer full (%d events), refusing %s",
                        len(self._out), describe(event))
            raise LogFull(f"write buffer full ({c.max_pending} events) while the event "
                          "log is unreachable")
        item = _Outgoing(event.id, event.to_json(), describe(event),
                         asyncio.get_running_loop().create_future(), self._headers(event))
        self._out.append(item)
        self.empty.clear()
        self._wake.set()
        if not self._conn.connected and c.when_unavailable == "buffer":
            self.counters.not_durable += 1
            return None
        try:
            async with asyncio.timeout(c.publish_timeout_s):
                seq = await asyncio.shield(item.done)
        except TimeoutError:
            if c.when_unavailable == "buffer":
                self.counters.not_durable += 1
                return None
            item.abandoned = True
            if item is not self._inflight:
                with contextlib.suppress(ValueError):
                    self._out.remove(item)
                if not self._out:
                    self.empty.set()
            raise LogUnavailable(f"no JetStream ack within {c.publish_timeout_s} s"
                                 " (the event may still be stored, once)") from None
        if seq == _REJECTED:
            raise LogRejected(f"the stream rejected {item.text}; sent to {c.dead}")
        return seq

    def _headers(self, event: Event) -> dict[str, str]:
        headers = {"Nats-Msg-Id": event.id}
        if self.config.region:  # stamped once: a buffered event's lag includes its wait
            headers |= {REGION_HEADER: self.config.region, SENT_AT_HEADER: f"{time.time():.6f}"}
        return headers

    async def flush(self) -> None:
        """Publish the buffer in order; stop at the first transient failure."""
        try:
            await self._publish_buffer()
        finally:
            if not self._out:
                self.empty.set()

    async def _publish_buffer(self) -> None:
        c = self.config
        while self._out and self._conn.connected:
            item = self._inflight = self._out[0]
            try:
                ack = await self._conn.js.publish(c.subject, item.data,
                                                  timeout=c.publish_timeout_s,
                                                  headers=item.headers)
            except _TRANSIENT:
                if item.abandoned and self._out and self._out[0] is item:
                    self._out.popleft()  # its caller was told UNAVAILABLE: do not retry it
                raise
            except Exception as exc:  # the stream (or client) refuses this very event
                item.tries += 1
                self.counters.rejections += 1
                log.warning("event log: publish of %s rejected (try %d of %d): %s",
                            item.text, item.tries, c.max_tries, exc)
                if item.tries < c.max_tries:
                    raise
                self._out.popleft()
                await self._dead.send(item.data, item.event_id, f"publish rejected: {exc}")
                if not item.done.done():
                    item.done.set_result(_REJECTED)
                self._on_rejected(Event.from_json(item.data))
                continue
            finally:
                self._inflight = None
            if self._out and self._out[0] is item:
                self._out.popleft()
            if not item.done.done():
                item.done.set_result(ack.seq)


class Follower:
    """Replays the stream, then follows it: every event to the sink once, in order; the
    events the sink decides on the way (evictions) go to the write buffer."""

    def __init__(self, connection: Connection, dead_letters: DeadLetters, buffer: WriteBuffer,
                 sink: EventSink) -> None:
        self._conn = connection
        self.config = connection.config
        self._dead = dead_letters
        self._buffer = buffer
        self._sink = sink
        self.last_seq = 0
        self.replayed = asyncio.Event()
        self._seen: OrderedDict[str, float] = OrderedDict()  # event id -> when applied
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._sub: Any = None
        self._background: set[asyncio.Task[None]] = set()

    async def caught_up(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until this replica has applied the stream through `seq` (False on timeout)."""
        if self.last_seq >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, id(fut), fut))
        try:
            async with asyncio.timeout(self.config.apply_timeout_s if timeout is None
                                       else timeout):
                await fut
            return True
        except TimeoutError:
            return False

    async def settled(self) -> None:
        """Wait until the events the sink decided have been handed to the buffer."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def replay(self) -> None:
        """Subscribe from the start and apply up to the stream's last sequence."""
        info = await self._conn.js.stream_info(self.config.stream)
        target = info.state.last_seq
        await self.subscribe()
        if info.state.messages and not await self.caught_up(target,
                                                             self.config.replay_timeout_s):
            raise TimeoutError(f"replay stopped at {self.last_seq} of {target}")
        self.replayed.set()

    async def subscribe(self) -> None:
        """(Re)subscribe after the last sequence applied."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self.last_seq:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=self.last_seq + 1)
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
        self._sub = await self._conn.js.subscribe(self.config.followed, cb=self._on_msg,
                                                  config=config, ordered_consumer=True,
                                                  stream=self.config.stream)

    async def _on_msg(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return
        headers = msg.headers or {}
        event_id = headers.get("Nats-Msg-Id", f"seq-{seq}")
        try:
            event = Event.from_json(msg.data)
            event_id = event.id or event_id
            if event_id not in self._seen:
                self._hand_on(self._sink.apply(event))
                self._note_origin(headers)
        except Exception as exc:  # applying is deterministic: a retry fails the same way
            log.warning("event log: cannot apply event %s at sequence %d (%r): %r",
                        event_id, seq, exc, msg.data[:300])
            await self._dead.send(msg.data, event_id, f"apply failed at {seq}: {exc!r}")
        self._remember(event_id)
        self._advance(seq)

    def _note_origin(self, headers: Mapping[str, str]) -> None:
        """Count an event another region wrote, and how long it took to be applied here."""
        origin = headers.get(REGION_HEADER, "")
        if not origin or origin == self.config.region:
            return
        counters = self._buffer.counters
        counters.replicated[origin] = counters.replicated.get(origin, 0) + 1
        if not self.replayed.is_set():  # replaying old events: their age is not lag
            return
        with contextlib.suppress(ValueError):
            sent = float(headers.get(SENT_AT_HEADER, ""))
            counters.lag_s[origin] = max(time.time() - sent, 0.0)

    def _hand_on(self, decided: list[Event]) -> None:
        if not decided:
            return
        task = asyncio.get_running_loop().create_task(self._append_decided(decided))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _append_decided(self, decided: list[Event]) -> None:
        for event in decided:
            try:
                await self._buffer.append(event)
            except Exception as exc:  # a later store in this namespace decides again
                self._sink.withdraw(event)
                log.warning("eviction not logged (%s): %s %s", exc, event.op, event.entry_id)

    def _remember(self, event_id: str) -> None:
        now = time.monotonic()
        self._seen[event_id] = now
        self._seen.move_to_end(event_id)
        while self._seen:
            oldest, when = next(iter(self._seen.items()))
            if now - when <= self.config.max_age_s:
                break
            del self._seen[oldest]

    def _advance(self, seq: int) -> None:
        self.last_seq = seq
        while self._waiters and self._waiters[0][0] <= seq:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)


class JetStreamLog:
    """`EntryLog` on JetStream; an async context manager that replays, then follows."""

    def __init__(self, connection: Connection, buffer: WriteBuffer, follower: Follower,
                 counters: LogCounters, wake: asyncio.Event) -> None:
        self.config = connection.config
        self.connection = connection
        self.buffer = buffer
        self.follower = follower
        self.counters = counters
        self._wake = wake
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> JetStreamLog:
        try:
            await self.connection.connect()
            await self.follower.replay()
        except Exception as exc:  # NATS down at start: serve from memory, catch up later
            log.warning("event log unavailable at start (%s); serving from memory", exc)
            self.connection.stale = True
        self._tasks.append(asyncio.create_task(self._publisher(), name="cache-log-publisher"))
        if self.config.sources:
            self._tasks.append(asyncio.create_task(self._watch_sources(),
                                                   name="cache-log-sources"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.connection.nc is not None:
            if self.buffer.pending and self.connected:
                try:
                    await self.buffer.flush()
                except Exception as exc:
                    log.warning("event log: flush at shutdown failed (%s)", exc)
            if self.buffer.pending:
                log.warning("event log: %d buffered events never reached JetStream and are "
                            "lost: %s", self.buffer.pending, self.buffer.texts(5))
            await self.connection.close()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up."""
        return self.connection.connected

    @property
    def degraded(self) -> bool:
        """True while writes cannot reach the stream (or have not caught up)."""
        return not self.connected or bool(self.buffer.pending) or self.connection.stale

    @property
    def pending(self) -> int:
        """Writes waiting for a JetStream ack."""
        return self.buffer.pending

    @property
    def last_seq(self) -> int:
        """The last stream sequence this replica applied."""
        return self.follower.last_seq

    @property
    def replayed(self) -> asyncio.Event:
        """Set once the stream has been applied up to its end at start (or resubscribe)."""
        return self.follower.replayed

    # ---- the EntryLog ---------------------------------------------------------------
    async def append(self, event: Event) -> int | None:
        """Publish `event`; its stream sequence once acknowledged, None if only buffered.

        Raises `LogUnavailable` (refuse mode, no ack in time), `LogFull` (buffer mode,
        buffer full) or `LogRejected` (the stream refused it `max_tries` times).
        """
        return await self.buffer.append(event)

    async def caught_up(self, seq: int) -> bool:
        """Wait until this replica has applied the stream through `seq` (False on timeout)."""
        return await self.follower.caught_up(seq)

    async def settled(self) -> None:
        """Wait until the evictions the replica decided have been handed to the buffer."""
        await self.follower.settled()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the NATS connection is up (False on timeout)."""
        return await _wait_set(self.connection.up, timeout) and self.connected

    async def drained(self, timeout: float) -> bool:
        """Wait until every buffered write has been acknowledged (False on timeout)."""
        return await _wait_set(self.buffer.empty, timeout)

    async def _publisher(self) -> None:
        conn = self.connection
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the cancel of
            # a shutdown when the wake-up lands at the same moment (seen here as a hang).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.retry_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if conn.nc is None:
                    await conn.connect()
                if conn.stale and conn.connected:
                    await conn.ensure_streams()
                    await self.follower.subscribe()
                    conn.stale = False
                    self.follower.replayed.set()
                if self.buffer.pending and conn.connected:
                    await self.buffer.flush()
            except Exception as exc:
                log.debug("event log still unavailable: %s", exc)


    async def _watch_sources(self) -> None:
        """Every `source_check_s`, restart the peer regions' sources that stalled."""
        interval = self.config.source_check_s
        while True:
            await asyncio.sleep(interval)
            if not self.connected:
                continue
            try:
                await self.connection.restart_stalled_sources(stalled_after_s=interval)
            except Exception as exc:
                log.debug("event log: sources not checked: %s", exc)


def open_log(config: LogConfig, sink: EventSink) -> JetStreamLog:
    """The parts of a JetStream log wired together, following into `sink` once entered."""
    counters, wake = LogCounters(), asyncio.Event()
    connection = Connection(config, counters, wake)
    dead = DeadLetters(connection, counters)
    buffer = WriteBuffer(connection, dead, counters, wake, on_rejected=sink.withdraw)
    return JetStreamLog(connection, buffer, Follower(connection, dead, buffer, sink),
                        counters, wake)


async def _wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set; False when `timeout` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
