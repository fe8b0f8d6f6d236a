"""The one-engine mesh the benchmarks start."""

from __future__ import annotations


def test_the_one_engine_benchmark_mesh_gives_its_broker_both_tiers() -> None:
    """The broker's NATS user may only touch the queues of the tiers the stack reads from
    its flags: the benchmarks' one-engine broker must name them where they are read."""
    from cmesh.bench.mesh import one_engine_mesh
    from cmesh.stack import broker_tiers

    assert broker_tiers(one_engine_mesh(lambda _: [])) == ["large", "small"]
