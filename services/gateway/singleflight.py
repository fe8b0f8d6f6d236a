"""Single-flight: identical concurrent requests share one run of the work.

The first caller of a key starts the work as its own task (a flight); every
caller, first or later, replays the flight's events from the start. The work
is not tied to any one caller: a caller that leaves does not cancel it while
others still listen, and the last one leaving cancels it unless its answer is
already complete (so the cache store that follows an answer still happens).

Each caller brings its own deadline, and the flight lives as long as its
longest-lived listener: the work reads `flight.deadline()` (the latest deadline
of those still listening) whenever it sets a timeout, so a joiner with 90 s is
not cut off by a leader with 2 s. Each caller enforces its own deadline on
itself (`Orchestrator.ask`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.events: list[T] = []
        self.error: BaseException | None = None
        self.done = False
        self.answered = False
        self.deadlines: list[float] = []  # one per listener
        self.latest = 0.0  # the deadline the work runs to, kept when the last one leaves
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        return len(self.deadlines)

    def deadline(self) -> float:
        """The latest deadline among the listeners (monotonic clock)."""
        return self.latest

    def join(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        self.latest = max(self.deadlines)

    def leave(self, deadline: float) -> None:
        self.deadlines.remove(deadline)
        if self.deadlines:
            self.latest = max(self.deadlines)

    async def replay(self) -> AsyncIterator[T]:
        seen = 0
        while True:
            async with self.changed:
                while seen >= len(self.events) and not self.done:
                    await self.changed.wait()
                batch = self.events[seen:]
                seen += len(batch)
                finished = self.done and seen == len(self.events)
            for event in batch:
                yield event
            if finished:
                if self.error is not None:
                    raise self.error
                return


class SingleFlight(Generic[T]):
    """Runs `work()` once per key among concurrent callers of `stream(key, work)`.

    `is_final(event)` marks the event after which the work may no longer be
    cancelled by callers leaving (the answer is out; what follows is cleanup).
    """

    def __init__(self, is_final: Callable[[T], bool]) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}
        self._is_final = is_final

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    async def stream(self, key: Hashable, work: Callable[[Callable[[], float]], AsyncIterator[T]],
                     deadline: float) -> AsyncIterator[tuple[bool, T]]:
        """Yield (joined, event): joined is True for callers that found a flight running.

        `work(flight_deadline)` runs once per flight; `flight_deadline()` is the latest
        `deadline` (monotonic) of the callers still listening.

        A flight whose answer is already out is only finishing (storing it); a new
        caller waits for that to end and starts afresh, so it finds the stored answer
        instead of replaying a stale "miss".
        """
        flight = self._flights.get(key)
        while flight is not None and flight.answered and flight.task is not None:
            await asyncio.wait({flight.task})
            flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            flight.task = asyncio.create_task(self._drive(key, flight, work))
        flight.join(deadline)  # before the new task first runs, so it reads this deadline
        try:
            async for event in flight.replay():
                yield joined, event
        finally:
            await self._leave(flight, deadline)

    async def follow(self, key: Hashable, deadline: float) -> AsyncIterator[T]:
        """Replay the flight of `key` as one more listener, from its start; nothing when
        none is running or its answer is already out (starts no work)."""
        flight = self._flights.get(key)
        if flight is None or flight.answered:
            return
        flight.join(deadline)
        try:
            async for event in flight.replay():
                yield event
        finally:
            await self._leave(flight, deadline)

    @staticmethod
    async def _leave(flight: _Flight[T], deadline: float) -> None:
        """One listener leaves; the last one cancels work whose answer is not out yet."""
        flight.leave(deadline)
        task = flight.task
        if flight.listeners == 0 and not flight.answered and task and not task.done():
            task.cancel()
            await asyncio.wait([task])  # the tier call is aborted before the caller returns

    async def _drive(self, key: Hashable, flight: _Flight[T],
                     work: Callable[[Callable[[], float]], AsyncIterator[T]]) -> None:
        try:
            async for event in work(flight.deadline):
                async with flight.changed:
                    flight.events.append(event)
                    flight.answered = flight.answered or self._is_final(event)
                    flight.changed.notify_all()
        except asyncio.CancelledError as exc:
            flight.error = exc
        except Exception as exc:  # replayed to every listener
            flight.error = exc
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            async with flight.changed:
                flight.done = True
                flight.changed.notify_all()

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for running flights (answers and their stores) to end."""
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)
