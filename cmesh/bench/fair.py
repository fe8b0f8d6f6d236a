"""Fair comparisons for every `cmesh bench`: warm each side up, then alternate A-B-B-A.

Load from other processes on a shared machine drifts over a run; a side that
always runs first (or alone right after start-up) gets a different machine
from the one that runs second. `compare` warms every side up the same way,
then runs rounds in the order A B, B A, A B... so drift falls on both sides
alike, and sums work and time per side over all rounds. Each side measures
one thing only (tokens, prompts or lookups per second; or call latencies):
mixing, say, throughput with hit rate would make the ratio mean neither.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

Run = Callable[[int], "Sample | Awaitable[Sample]"]
"""One timed round of a side; gets the round number (warm-up rounds are negative)."""


@dataclass
class Sample:
    """What one round did: `work` units (tokens, prompts...) in `seconds`, and optionally
    the latency of each call in it."""

    work: float
    seconds: float
    latencies: list[float] = field(default_factory=list)


@dataclass
class Side:
    """Every measured round of one side."""

    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Work per second over all rounds."""
        seconds = sum(s.seconds for s in self.samples)
        return sum(s.work for s in self.samples) / seconds if seconds else 0.0

    @property
    def latency_p50(self) -> float:
        """Median call latency over all rounds (seconds)."""
        return statistics.median(x for s in self.samples for x in s.latencies)


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(work: Callable[[], Awaitable[float]]) -> Sample:
    """Run `work` (which returns the units it did) and time it."""
    start = time.perf_counter()
    done = await work()
    return Sample(work=done, seconds=time.perf_counter() - start)


async def _run(run: Run, round_: int) -> Sample:
    result = run(round_)
    return await result if inspect.isawaitable(result) else result  # type: ignore[return-value]


async def compare(sides: Mapping[str, Run], rounds: int, warmup: int = 1,
                  report: Callable[[str], None] | None = None) -> dict[str, Side]:
    """Warm every side up `warmup` times, then run `rounds` rounds, alternating the order
    (A B, B A, ...; with more sides, forward then backward)."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    names = list(sides)
    for w in range(warmup):
        for name in names:
            await _run(sides[name], -1 - w)
    results = {name: Side(name) for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            sample = await _run(sides[name], r)
            results[name].samples.append(sample)
            if report is not None:
                rate = sample.work / sample.seconds if sample.seconds else 0.0
                report(f"round {r} {name}: {rate:.1f}/s")
    return results
