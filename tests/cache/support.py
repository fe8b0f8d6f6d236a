"""Helpers for replica tests: a cache on a real JetStream log, draining, reading the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.js.errors import NotFoundError

from cache.core import SemanticCache
from cache.entries import Event
from cache.replica import EventSink
from services.cache.log import JetStreamLog, LogConfig, open_log

MakeCache = Callable[..., SemanticCache]
STREAM, SUBJECT = "CMESH_CACHE", "cmesh.cache.log"


@asynccontextmanager
async def replica(url: str, make_cache: MakeCache, cache_config: dict[str, Any] | None = None,
                  **log_options: Any) -> AsyncIterator[SemanticCache]:
    """One replica: a cache on the real embedder and verifier, following the stream."""
    # An ack slower than publish_timeout_s answers "not durable": generous, for loaded CI.
    options = {"retry_s": 0.1, "publish_timeout_s": 3.0, **log_options}
    config = LogConfig(url, **options)

    def make_log(sink: EventSink) -> JetStreamLog:
        return open_log(config, sink)

    cache = make_cache(log=make_log, **(cache_config or {}))
    async with log_of(cache):
        yield cache


def log_of(cache: SemanticCache) -> JetStreamLog:
    assert isinstance(cache.log, JetStreamLog)
    return cache.log


async def last_seq(url: str, stream: str = STREAM) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.last_seq)
    finally:
        await nc.close()


async def drain(url: str, caches: Iterable[SemanticCache], timeout: float = 20.0) -> int:
    """Wait (on conditions, no sleeps) until every replica has published its buffer and its
    decided evictions and applied the whole stream; returns the last sequence."""
    caches = list(caches)

    async def quiet() -> int:
        for cache in caches:
            assert await log_of(cache).drained(timeout), "buffered writes never acknowledged"
            await cache.settled()
        return await last_seq(url)

    target = await quiet()
    while True:
        for cache in caches:
            assert await log_of(cache).caught_up(target), f"a replica stuck before {target}"
        again = await quiet()  # applying its own stores may have made a replica evict
        if again == target:
            return target
        target = again


async def read_events(url: str, stream: str = STREAM) -> list[tuple[int, Event]]:
    """Every event the stream holds, in sequence order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            out.append((seq, Event.from_json(msg.data)))
        return out
    finally:
        await nc.close()


async def publish_raw(url: str, data: bytes, msg_id: str, subject: str = SUBJECT) -> int:
    """Put bytes on the cache stream directly (as a buggy writer or an old retry would)."""
    nc = await nats.connect(url)
    try:
        ack = await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        return int(ack.seq)
    finally:
        await nc.close()


def model(events: Iterable[tuple[int, Event]]) -> set[str]:
    """The entry ids one replica fed `events` in order must hold, written independently of
    `ReplicaState.apply`: duplicates once, removals only of the named tenant's entries."""
    held: dict[str, tuple[str, str]] = {}  # entry id -> (tenant, namespace)
    seen: set[str] = set()
    for _, ev in events:
        if ev.id in seen:
            continue
        seen.add(ev.id)
        if ev.op == "store":
            assert ev.entry is not None
            if ev.namespace.startswith(ev.tenant + "/"):  # never into another's namespace
                held.setdefault(ev.entry.id, (ev.tenant, ev.namespace))
        elif ev.entry_id:
            if held.get(ev.entry_id, ("", ""))[0] == ev.tenant:
                del held[ev.entry_id]
        else:
            for entry_id, (tenant, ns) in list(held.items()):
                if tenant == ev.tenant and ev.namespace in ("", ns):
                    del held[entry_id]
    return set(held)
