"""What a client knows of each tier from the brokers' beacons (`broker.tier.<tier>`).

Every broker publishes a `TierBeacon` per tier each `heartbeat_s`. A tier is
up while at least one broker beaconed within `dead_after_s` and at least one
of those brokers is not down (it has a healthy backend replica). Before the
first beacon of a tier arrives the tier gets `dead_after_s` of grace from the
watch's start (a broker that never showed up is as dead as one that stopped).

A job's heartbeats name the broker holding it: a job whose broker is no
longer live while the tier is up is orphaned (another broker could run it).

In a supercluster each region's brokers beacon their own queue of a tier
(`TierBeacon.region`): every question takes the region, and a tier may be up
in one region and down in another.

Pure bookkeeping over a clock; `TierWatch.start` subscribes on a NATS
connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protos.broker.v1 import broker_pb2
from services.broker.subjects import BEACONS

log = logging.getLogger(__name__)


Queue = tuple[str, str]  # (tier, region): one queue of a tier


@dataclass(frozen=True)
class Seen:
    at: float  # monotonic
    beacon: broker_pb2.TierBeacon


class TierWatch:
    """Tier liveness from beacons; `problem(tier)` is None while the tier can take work."""

    def __init__(self, dead_after_s: float = 1.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dead_after_s = dead_after_s
        self._clock = clock
        self._started = clock()
        self._seen: dict[Queue, dict[str, Seen]] = {}  # broker id -> last beacon
        self._sub: Any = None
        self._was_up: dict[Queue, bool] = {}

    async def start(self, nc: Any) -> None:
        async def on_beacon(msg: Any) -> None:
            with contextlib.suppress(Exception):
                self.observe(broker_pb2.TierBeacon.FromString(msg.data))

        self._started = self._clock()
        self._sub = await nc.subscribe(BEACONS, cb=on_beacon)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def observe(self, beacon: broker_pb2.TierBeacon) -> None:
        queue = (beacon.tier, beacon.region)
        self._seen.setdefault(queue, {})[beacon.broker_id] = Seen(self._clock(), beacon)

    def live(self, tier: str, broker_id: str, region: str = "") -> bool:
        """Whether broker `broker_id` beaconed `tier` (in `region`) within `dead_after_s`."""
        seen = self._seen.get((tier, region), {}).get(broker_id)
        return seen is not None and self._clock() - seen.at <= self.dead_after_s

    def live_brokers(self, tier: str, region: str = "") -> list[str]:
        """Ids of the brokers that beaconed `tier` (in `region`) within `dead_after_s`."""
        return sorted(b for b in self._seen.get((tier, region), {})
                      if self.live(tier, b, region))

    def problem(self, tier: str, region: str = "") -> str | None:
        """Why `tier` (its queue in `region`) cannot take work now, naming the tier (and
        the region), or None when it can."""
        now = self._clock()
        queue = (tier, region)
        seen = self._seen.get(queue, {})
        name = f"tier {tier!r}" + (f" in region {region!r}" if region else "")
        for broker in [b for b, s in seen.items() if now - s.at > 10 * self.dead_after_s]:
            del seen[broker]  # long gone: forget it
        live = [s.beacon for s in seen.values() if now - s.at <= self.dead_after_s]
        if not live:
            if not seen and now - self._started <= self.dead_after_s:
                return None  # just started: beacons are on their way
            last = max((s.at for s in seen.values()), default=None)
            since = "" if last is None else f" (last beacon {now - last:.1f} s ago)"
            return self._report(queue, f"{name}: no live broker{since}")
        if all(b.down for b in live):
            return self._report(queue, f"{name}: no healthy backend replica "
                                f"({live[0].replicas} configured)")
        return self._report(queue, None)

    def _report(self, queue: Queue, problem: str | None) -> str | None:
        up = problem is None
        if self._was_up.get(queue, True) and not up:
            log.warning("%s", problem)
        elif up and not self._was_up.get(queue, True):
            log.info("tier %r is up again%s", queue[0],
                     f" in region {queue[1]!r}" if queue[1] else "")
        self._was_up[queue] = up
        return problem

    def tiers(self) -> list[str]:
        """Every tier a beacon was seen for (in any region)."""
        return sorted({tier for tier, _ in self._seen})
