"""Durable writes on a real nats-server: acks before answers, a bounded buffer that refuses
instead of dropping, the buffer replayed in order, and poison events dead-lettered."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import nats
import pytest

from cache.keys import Conversation, Sampling, Scope
from services.cache.log import LogFull, LogRejected, LogUnavailable
from services.common.natsd import NatsServer
from tests.cache.support import MakeCache, drain, log_of, publish_raw, read_events, replica

pytestmark = pytest.mark.nats
ACME = Scope(tenant="acme", sampling=Sampling(temperature=0.0))
BRIEF = Scope(tenant="acme", conversation=Conversation("Be brief."), sampling=ACME.sampling)
QUESTIONS = ["What is the capital of France?", "How do I reset my password?",
             "How many legs does a spider have?", "Who wrote Hamlet?", "How far is the Moon?",
             "What does HTTP 404 mean?", "How do I boil an egg?"]


async def test_store_is_durable_only_after_the_ack(nats_server: NatsServer,
                                                    make_cache: MakeCache) -> None:
    async with replica(nats_server.url, make_cache) as one:
        stored = await one.store_with_receipt(ACME, QUESTIONS[0], "Paris")
        assert stored.durable
        events = await read_events(nats_server.url)
        assert [(ev.op, ev.entry_id) for _, ev in events] == [("store", stored.entry.id)]
        await nats_server.stop()
        assert not (await one.store_with_receipt(ACME, QUESTIONS[1], "Settings")).durable
        assert log_of(one).counters.not_durable == 1


async def test_refuse_mode_answers_unavailable(nats_server: NatsServer,
                                               make_cache: MakeCache) -> None:
    async with replica(nats_server.url, make_cache, when_unavailable="refuse") as one:
        await nats_server.stop()
        with pytest.raises(LogUnavailable):
            await one.store(ACME, QUESTIONS[0], "Paris")
        assert one.entry_ids() == set(), "a refused store is taken back"
        assert log_of(one).pending == 0


async def test_outage_overflow_refused_counted_and_the_rest_applied_in_order(
        nats_server: NatsServer, make_cache: MakeCache) -> None:
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(replica(nats_server.url, make_cache,
                                                      max_pending=4))
        two = await stack.enter_async_context(replica(nats_server.url, make_cache))
        old = await one.store(ACME, QUESTIONS[0], "Paris")
        kept = await one.store(BRIEF, QUESTIONS[1], "Settings")
        await drain(nats_server.url, [one, two])
        await nats_server.stop()
        # Longer than the buffer holds: 4 writes wait, then every further one is refused.
        outcome = await one.invalidate_namespace(ACME)
        assert not outcome.durable and outcome.removed == 1
        accepted = []
        for question in QUESTIONS[2:5]:
            stored = await one.store_with_receipt(ACME, question, "A: " + question)
            assert not stored.durable
            accepted.append(stored.entry.id)
        for question in QUESTIONS[5:]:
            with pytest.raises(LogFull):
                await one.store(ACME, question, "never stored")
        assert log_of(one).counters.refused == 2 and log_of(one).pending == 4
        await nats_server.start()
        await drain(nats_server.url, [one, two])
        expected = {kept.id, *accepted}
        assert one.entry_ids() == two.entry_ids() == expected  # the invalidation came first
        async with replica(nats_server.url, make_cache) as fresh:
            assert fresh.entry_ids() == expected
        events = [ev for _, ev in await read_events(nats_server.url)]
        assert [(ev.op, ev.entry_id) for ev in events] == [
            ("store", old.id), ("store", kept.id), ("invalidate", ""),
            *[("store", entry_id) for entry_id in accepted]]


async def test_poison_events_are_dead_lettered_and_stop_blocking(
        nats_server: NatsServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.cache.log")
    small = {"max_event_bytes": 4096}  # every replica sets the stream up the same way
    async with replica(nats_server.url, make_cache, max_tries=2, publish_timeout_s=5.0,
                       **small) as one, replica(nats_server.url, make_cache, **small) as two:
        with pytest.raises(LogRejected):
            await one.store(ACME, QUESTIONS[0], "x" * 10_000)  # always over the stream's limit
        assert one.entry_ids() == set()
        after = await one.store(ACME, QUESTIONS[1], "Settings")
        await publish_raw(nats_server.url, b"{not an event", "garbage-1")
        last = await one.store(ACME, QUESTIONS[2], "Eight")
        await drain(nats_server.url, [one, two])
        assert one.entry_ids() == two.entry_ids() == {after.id, last.id}
        assert log_of(one).counters.dead_letters >= 2
        dead = await _dead_letters(nats_server.url)
        assert len(dead) == 2, "one copy each: the rejected store and the unreadable event"
        assert any(b"x" * 100 in body for body in dead) and b"{not an event" in dead
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("rejected" in w and "store" in w for w in warnings)
        assert any("cannot apply" in w for w in warnings)
        # Buffered while NATS is down, answered "not durable", rejected once NATS is back:
        # the replica withdraws its tentative entry instead of keeping one nobody else has.
        await nats_server.stop()
        late = await one.store_with_receipt(BRIEF, QUESTIONS[3], "y" * 10_000)
        assert not late.durable and late.entry.id in one.entry_ids()
        await nats_server.start()
        await drain(nats_server.url, [one, two])
        assert one.entry_ids() == two.entry_ids() == {after.id, last.id}
        assert len(await _dead_letters(nats_server.url)) == 3


async def test_nats_errors_and_disconnects_are_logged(
        nats_server: NatsServer, make_cache: MakeCache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.cache.log")
    async with replica(nats_server.url, make_cache) as one:
        await nats_server.stop()
        await one.store(ACME, QUESTIONS[0], "Paris")
        await nats_server.start()
        assert await log_of(one).drained(20)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("disconnected" in m for m in messages)
    assert any("reconnected" in m for m in messages)
    errors = [m.split("(")[0] for m in messages if "NATS error" in m]  # from error_cb
    assert errors and len(errors) == len(set(errors)), "one line per kind, not per retry"


async def _dead_letters(url: str) -> list[bytes]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info("CMESH_CACHE_DEAD")).state
        return [(await js.get_msg("CMESH_CACHE_DEAD", seq)).data
                for seq in range(state.first_seq, state.last_seq + 1)]
    finally:
        await nc.close()
