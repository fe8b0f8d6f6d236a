"""The gateway's view of each tier's health, reported where operators look.

Through the broker, the brokers' tier beacons (`services.broker.beacons`)
say whether a tier can take work. Every `every_s` the gateway reports each
tier under the gRPC health name `cascademesh.tier.<tier>` (SERVING or
NOT_SERVING, apart from the gateway's own status) and as the gauge
`gateway_tier_up{tier}`. Across regions a tier is up while any region of the
gateway's failover order can take its jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Gauge

from services.broker.beacons import TierWatch

TIER_HEALTH_PREFIX = "cascademesh.tier."
log = logging.getLogger(__name__)


def tier_health_name(tier: str) -> str:
    return f"{TIER_HEALTH_PREFIX}{tier}"


async def report_tiers(watch: TierWatch, tiers: Sequence[str],
                       set_part_serving: Callable[[str, bool], Awaitable[None]],
                       gauge: Gauge, every_s: float = 0.5,
                       regions: Sequence[str] = ("",)) -> None:
    """Report every tier's health until cancelled."""
    while True:
        for tier in tiers:
            up = any(watch.problem(tier, region) is None for region in regions)
            gauge.labels(tier).set(1 if up else 0)
            await set_part_serving(tier_health_name(tier), up)
        await asyncio.sleep(every_s)
