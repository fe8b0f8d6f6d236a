"""The one-engine mesh the benchmarks start."""

from __future__ import annotations


def test_the_one_engine_benchmark_mesh_gives_its_broker_both_tiers() -> None:
    """The broker's NATS user may only touch the queues of the tiers the stack reads from
    its flags: the benchmarks' one-engine broker must name them where they are read."""
    from cmesh.bench.mesh import one_engine_mesh
    from cmesh.stack import broker_tiers

    assert broker_tiers(one_engine_mesh(lambda _: [])) == ["large", "small"]


def test_metric_samples_read_labelled_and_bare_lines() -> None:
    from cmesh.commands.gateway import samples

    body = ("# HELP cache_lookups_total Lookups.\ncache_lookups_total 12.0\n"
            "cache_lookups_created 1.7e9\ngateway_tier_up{tier=\"small\"} 1.0\n"
            "gateway_tier_up{tier=\"large\"} 0.0\n")
    assert samples(body, "cache_lookups_total") == [({}, 12.0)]
    assert samples(body, "gateway_tier_up") == [({"tier": "small"}, 1.0),
                                                ({"tier": "large"}, 0.0)]
