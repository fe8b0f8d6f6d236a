"""The fair-benchmark helper: warm-ups first, then A-B-B-A, sums over rounds."""

from __future__ import annotations

import pytest

from cmesh.bench.fair import Sample, compare


async def test_warms_up_every_side_then_alternates_abba() -> None:
    calls: list[tuple[str, int]] = []

    def sync_side(r: int) -> Sample:
        calls.append(("a", r))
        return Sample(work=10, seconds=2.0, latencies=[0.1, 0.3])

    async def async_side(r: int) -> Sample:
        calls.append(("b", r))
        return Sample(work=30, seconds=1.0 + r, latencies=[0.2])

    sides = await compare({"a": sync_side, "b": async_side}, rounds=4, warmup=1)
    assert calls == [("a", -1), ("b", -1),
                     ("a", 0), ("b", 0), ("b", 1), ("a", 1),
                     ("a", 2), ("b", 2), ("b", 3), ("a", 3)]
    assert sides["a"].rate == pytest.approx(40 / 8)
    assert sides["b"].rate == pytest.approx(120 / (1 + 2 + 3 + 4))
    assert sides["a"].latency_p50 == pytest.approx(0.2)
    assert len(sides["b"].samples) == 4


async def test_needs_a_round() -> None:
    with pytest.raises(ValueError):
        await compare({"a": lambda r: Sample(1, 1)}, rounds=0)
