"""The cache service's event log on NATS JetStream: the adapter behind `cache.core.EntryLog`.

Every store, eviction and invalidation is published to one stream (its max
age is the entry TTL, its size bounded). A replica subscribes with an ordered
consumer from the first retained message, applies everything up to the
stream's last sequence before it reports ready, then keeps following, so all
replicas converge and a restart rebuilds what was there.

When NATS is unreachable the cache keeps serving from memory: writes queue in
a bounded buffer (oldest dropped past the bound, and counted) and a flusher
publishes them in order once the connection is back; the following
subscription resumes after the last sequence applied. Each event carries a
`Nats-Msg-Id`, so a publish retried after a lost acknowledgement is stored
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import nats
from nats.js import api

from cache.entries import Event

log = logging.getLogger(__name__)


class JetStreamLog:
    """`EntryLog` on JetStream; an async context manager that replays, then follows."""

    def __init__(self, url: str, apply: Callable[[Event], None], stream: str = "CMESH_CACHE",
                 subject: str = "cmesh.cache.log", max_age_s: float = 86_400.0,
                 max_bytes: int = 1 << 30, max_pending: int = 10_000, retry_s: float = 0.5,
                 publish_timeout_s: float = 2.0, replay_timeout_s: float = 60.0) -> None:
        self.url, self.stream, self.subject = url, stream, subject
        self._apply = apply
        self.max_age_s, self.max_bytes = max_age_s, max_bytes
        self.retry_s, self.publish_timeout_s = retry_s, publish_timeout_s
        self.replay_timeout_s = replay_timeout_s
        self._pending: deque[tuple[str, bytes]] = deque(maxlen=max_pending)
        self.dropped = 0
        self.last_seq = 0
        self.replayed = asyncio.Event()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._resubscribe_needed = False

    # ---- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> JetStreamLog:
        try:
            await self._connect()
            await self._replay()
        except Exception as exc:  # NATS down at start: serve from memory, catch up later
            log.warning("event log unavailable at start (%s); serving from memory", exc)
            self._resubscribe_needed = True
        self._tasks.append(asyncio.create_task(self._flusher(), name="cache-log-flusher"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._flush_pending()
            with contextlib.suppress(Exception):
                await self._nc.close()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    @property
    def degraded(self) -> bool:
        """True while writes cannot reach the stream (or have not caught up)."""
        return not self.connected or bool(self._pending) or self._resubscribe_needed

    @property
    def pending(self) -> int:
        """Writes waiting for NATS."""
        return len(self._pending)

    # ---- writing --------------------------------------------------------------------
    async def append(self, event: Event) -> None:
        """Publish `event`, or queue it while NATS is unreachable; never raises."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append((uuid.uuid4().hex, event.to_json()))
        if len(self._pending) == 1 and self.connected:
            with contextlib.suppress(Exception):
                await self._flush_pending()
        if self._pending:
            self._wake.set()

    async def _flush_pending(self) -> None:
        while self._pending:
            msg_id, data = self._pending[0]
            await self._js.publish(self.subject, data, timeout=self.publish_timeout_s,
                                   headers={"Nats-Msg-Id": msg_id})
            if self._pending and self._pending[0][0] == msg_id:
                self._pending.popleft()

    async def _flusher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.retry_s)
            self._wake.clear()
            try:
                if self._nc is None:
                    await self._connect()
                if self._resubscribe_needed and self.connected:
                    await self._ensure_stream()
                    await self._subscribe()
                    self._resubscribe_needed = False
                    self.replayed.set()
                if self._pending and self.connected:
                    await self._flush_pending()
            except Exception as exc:
                log.debug("event log still unavailable: %s", exc)

    # ---- reading --------------------------------------------------------------------
    async def _connect(self) -> None:
        async def reconnected() -> None:
            self._resubscribe_needed = True
            self._wake.set()

        async def quiet(_: Exception) -> None:
            return None

        self._nc = await nats.connect(self.url, connect_timeout=2, reconnect_time_wait=0.5,
                                      max_reconnect_attempts=-1, reconnected_cb=reconnected,
                                      error_cb=quiet, name="cmesh-cache")
        self._js = self._nc.jetstream()
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        config = api.StreamConfig(name=self.stream, subjects=[self.subject],
                                  max_age=self.max_age_s, max_bytes=self.max_bytes,
                                  storage=api.StorageType.FILE, duplicate_window=60.0)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.replay_timeout_s
        while self.last_seq < target and info.state.messages:
            if loop.time() > deadline:
                raise TimeoutError(f"replay stopped at {self.last_seq} of {target}")
            await asyncio.sleep(0.01)
        self.replayed.set()

    async def _on_msg(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.last_seq:
            return
        try:
            self._apply(Event.from_json(msg.data))
        except Exception:
            log.exception("skipping an unreadable cache event at %d", seq)
        self.last_seq = seq
