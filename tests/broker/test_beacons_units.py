"""TierWatch: a tier is up while a broker beaconed lately and one of them has a replica."""

from __future__ import annotations

from protos.broker.v1 import broker_pb2
from services.broker.beacons import TierWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def beacon(broker: str, down: bool = False) -> broker_pb2.TierBeacon:
    return broker_pb2.TierBeacon(tier="small", broker_id=broker, replicas=1,
                                 healthy_replicas=0 if down else 1, down=down)


def test_a_tier_gets_grace_before_its_first_beacon_then_is_down_until_one_comes() -> None:
    clock = Clock()
    watch = TierWatch(dead_after_s=1.5, clock=clock)
    assert watch.problem("small") is None
    clock.now += 2
    assert watch.problem("small") == "tier 'small': no live broker"
    watch.observe(beacon("b1"))
    assert watch.problem("small") is None


def test_silence_past_dead_after_is_a_dead_broker_while_another_keeps_the_tier_up() -> None:
    clock = Clock()
    watch = TierWatch(dead_after_s=1.5, clock=clock)
    watch.observe(beacon("b1"))
    watch.observe(beacon("b2"))
    clock.now += 1.0
    watch.observe(beacon("b2"))
    clock.now += 1.0  # b1 silent 2 s, b2 1 s
    assert watch.problem("small") is None
    assert watch.live_brokers("small") == ["b2"]
    clock.now += 1.0
    problem = watch.problem("small")
    assert problem is not None and "no live broker (last beacon 2.0 s ago)" in problem


def test_down_only_when_every_live_broker_is_down() -> None:
    clock = Clock()
    watch = TierWatch(dead_after_s=1.5, clock=clock)
    watch.observe(beacon("b1", down=True))
    watch.observe(beacon("b2"))
    assert watch.problem("small") is None
    watch.observe(beacon("b2", down=True))
    assert watch.problem("small") == "tier 'small': no healthy backend replica (1 configured)"
    assert watch.problem("large") is None  # another tier, still in its grace
    assert watch.tiers() == ["small"]


def test_each_region_of_a_tier_is_up_or_down_on_its_own() -> None:
    clock = Clock()
    watch = TierWatch(dead_after_s=1.5, clock=clock)
    watch.observe(broker_pb2.TierBeacon(tier="small", region="a", broker_id="b1", replicas=1,
                                        healthy_replicas=0, down=True))
    watch.observe(broker_pb2.TierBeacon(tier="small", region="b", broker_id="b2", replicas=1,
                                        healthy_replicas=1))
    assert watch.problem("small", "a") == ("tier 'small' in region 'a': no healthy backend "
                                           "replica (1 configured)")
    assert watch.problem("small", "b") is None
    assert watch.live_brokers("small", "b") == ["b2"] and watch.live_brokers("small") == []
    clock.now += 2
    assert watch.problem("small") == "tier 'small': no live broker"  # no unregioned queue
    assert watch.tiers() == ["small"]
