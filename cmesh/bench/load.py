"""The open-loop parts of `cmesh bench system` (issue 19): a rate ladder, the overload
run past it, and the labelled pass that counts the cache's wrong hits.

- **Ladder**: Poisson arrivals at rising rates (vLLM's benchmark client,
  `--request-rate`), one fresh stream per rung; a rung is *sustained* when no request
  failed, the TTFT p95 stays under `SLO_TTFT_S` and the time per output token p95
  under `TPOT_GROWTH` times the lowest rung's p50 (a continuous-batching engine
  keeps first tokens quick past its capacity and slows every sequence's decode
  instead; a queue pushes first tokens out). The sustainable rate is the highest
  sustained rung below the first that is not; a side stops at its first miss.
- **Overload**: twice the mesh's sustainable rate, each request with a deadline
  (`x-cmesh-timeout-s`). vLLM's client records no latency for a failed request, so
  refusals are timed by a probe on the official `openai` client (no retries), one
  request at a time beside the load; the gateway's own error counters say which
  accepted requests ran out their deadline (a stream cut at its deadline still
  looks answered to a client that ignores the closing error event).
- **Labelled pass**: the `openai` client sends a labelled stream to the cache-on mesh
  for a tenant of its own and reads each answer's `cascade` metadata; a hit is right
  when an earlier request asking the same thing (the same prompt, a repeat or a
  paraphrase of it) was answered with the very text the hit served.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cmesh.bench.fair import percentile
from cmesh.bench.workloads import Pools, Request

SLO_TTFT_S = 2.0
"""A rung is sustained while its TTFT p95 stays under this (and nothing failed)..."""
TPOT_GROWTH = 2.5
"""... and its time per output token p95 under this many times the lowest rung's p50."""

RunAt = Callable[[float, int], Awaitable[dict[str, Any]]]
"""One open-loop run of vLLM's client: (rate, rung) -> its result JSON."""


def ttfts(result: dict[str, Any]) -> list[float]:
    """The first-token times (s) of the answered requests of one client run."""
    return [t for t in result.get("ttfts", []) if t]


ONE_PIECE_GAPS = 2
"""Gaps (the client's `itls`) of an answer that came in one piece: after the opening
chunk, the whole text, then the closing chunk (a cache hit through either server)."""


def tpots(result: dict[str, Any]) -> list[float]:
    """Time per output token after the first (s) of each answered request of more than
    one token that was decoded as it streamed: an answer that came in one piece (a cache
    hit: at most `ONE_PIECE_GAPS` gaps in the client's `itls`) decoded nothing here, and
    its near-0 time would drag a rung's TPOT median down to nothing."""
    gaps = result.get("itls")
    return [(e2e - first) / (n - 1) for i, (e2e, first, n) in enumerate(
            zip(result.get("latencies", []), result.get("ttfts", []),
                result.get("output_lens", []), strict=False))
            if e2e and n and n > 1
            and (gaps is None or (i < len(gaps) and len(gaps[i]) > ONE_PIECE_GAPS))]


def errors_by_reason(result: dict[str, Any]) -> dict[str, int]:
    """Failed requests of one client run by their HTTP reason (vLLM's client keeps the
    reason phrase, e.g. 'Too Many Requests'; a dropped connection keeps its traceback)."""
    out: dict[str, int] = {}
    for err in result.get("errors", []):
        if err:
            reason = err.strip().splitlines()[-1][:80] if "Traceback" in err else err
            out[reason] = out.get(reason, 0) + 1
    return out


@dataclass
class Rung:
    """One rate of the ladder for one configuration."""

    rate: float
    result: dict[str, Any]
    tpot_ref: float | None = None  # the lowest rung's TPOT p50 (None: this is it)

    def tpot(self, q: float) -> float | None:
        times = tpots(self.result)
        return percentile(times, q) if times else None

    @property
    def sustained(self) -> bool:
        times, tpot = ttfts(self.result), self.tpot(0.95)
        ref = self.tpot_ref if self.tpot_ref is not None else self.tpot(0.5)
        return (not self.result.get("failed") and bool(times)
                and percentile(times, 0.95) <= SLO_TTFT_S
                and (tpot is None or ref is None or tpot <= TPOT_GROWTH * ref))

    def summary(self) -> dict[str, Any]:
        times = ttfts(self.result)
        e2e = [x for x in self.result.get("latencies", []) if x]
        p50, p95 = self.tpot(0.5), self.tpot(0.95)
        return {
            "offered_rps": self.rate, "requests": len(self.result.get("errors", [])),
            "achieved_rps": self.result["request_throughput"],
            "output_tokens_per_s": self.result["output_throughput"],
            "ttft_p50_ms": percentile(times, 0.5) * 1000 if times else None,
            "ttft_p95_ms": percentile(times, 0.95) * 1000 if times else None,
            "e2e_p95_ms": percentile(e2e, 0.95) * 1000 if e2e else None,
            "tpot_p50_ms": p50 * 1000 if p50 is not None else None,
            "tpot_p95_ms": p95 * 1000 if p95 is not None else None,
            "failed": self.result.get("failed", 0), "errors": errors_by_reason(self.result),
            "sustained": self.sustained}


def sustainable(rungs: Sequence[Rung]) -> float | None:
    """The highest rate sustained before the first rung that is not (None: not even the
    lowest)."""
    best = None
    for rung in sorted(rungs, key=lambda r: r.rate):
        if not rung.sustained:
            break
        best = rung.rate
    return best


async def ladder(sides: dict[str, RunAt], rates: Sequence[float],
                 report: Callable[[str], None]) -> dict[str, list[Rung]]:
    """Each rate for every side, the sides' order reversed on alternate rungs; a side
    that missed a rung runs no higher one."""
    out: dict[str, list[Rung]] = {name: [] for name in sides}
    names = list(sides)
    for i, rate in enumerate(rates):
        for name in names if i % 2 == 0 else names[::-1]:
            done = out[name]
            if done and not done[-1].sustained:
                continue
            ref = done[0].tpot(0.5) if done else None  # the side's lowest rung
            rung = Rung(rate, await sides[name](rate, i), ref)
            done.append(rung)
            s = rung.summary()
            report(f"  ladder {name} at {rate:.2f} req/s: achieved {s['achieved_rps']:.2f}, "
                   f"TTFT p95 {s['ttft_p95_ms'] or 0:.0f} ms, failed {s['failed']}"
                   f"{'' if rung.sustained else ' (not sustained)'}")
    return out


@dataclass
class Probe:
    """Requests sent one at a time while a load runs: each one's outcome and time."""

    refused_ms: list[float] = field(default_factory=list)
    retry_after_ms: list[int] = field(default_factory=list)
    accepted_ms: list[float] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)


async def probe(base_url: str, key: str, prompts: Sequence[str], deadline_s: float,
                stop: asyncio.Event, headers: dict[str, str], max_tokens: int) -> Probe:
    """Ask `prompts` in turn through the official `openai` client (no retries) until
    `stop` is set, timing each refusal (429) and each answer. Each asks for the
    workload's longest answer (`max_tokens`): the first kind of call a loaded tier
    cannot finish in time, so the probe samples the refusal path while the load runs."""
    import openai

    out = Probe()
    api = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0,
                             timeout=deadline_s + 30)
    try:
        for n, prompt in enumerate(prompts):
            if stop.is_set():
                break
            start = time.perf_counter()
            try:
                await api.chat.completions.create(
                    model="cascade-mesh", max_tokens=max_tokens, temperature=0,
                    messages=[{"role": "user", "content": f"{prompt} ({n})"}],
                    extra_headers={**headers, "x-cmesh-timeout-s": str(deadline_s)})
                out.accepted_ms.append((time.perf_counter() - start) * 1000)
            except openai.RateLimitError as err:
                out.refused_ms.append((time.perf_counter() - start) * 1000)
                hint = err.response.headers.get("retry-after-ms")
                out.retry_after_ms.append(int(hint) if hint else -1)
                await asyncio.sleep(0.05)  # a probe, not a flood
            except openai.APIError as err:
                name = type(err).__name__
                out.other[name] = out.other.get(name, 0) + 1
    finally:
        await api.close()
    return out


def overload_figures(result: dict[str, Any], probed: Probe, deadline_s: float,
                     deadline_exceeded: float, left_running: float) -> dict[str, Any]:
    """The overload keys from the load's client result, the probe, the gateway's count
    of DEADLINE_EXCEEDED over the run and the backends' unfinished requests after it."""
    errors = errors_by_reason(result)
    load_refused = errors.pop("Too Many Requests", 0)
    refused = load_refused + len(probed.refused_ms)
    latencies = [x for x in result.get("latencies", []) if x]
    late = sum(x > deadline_s for x in latencies) + sum(
        x > deadline_s * 1000 for x in probed.accepted_ms)
    sent = len(result.get("errors", [])) + len(probed.refused_ms) + len(
        probed.accepted_ms) + sum(probed.other.values())
    accepted = sent - refused
    failed_other = sum(errors.values()) + sum(probed.other.values())
    not_within = max(late + failed_other, int(deadline_exceeded))
    return {
        "reject_p99_ms": percentile(probed.refused_ms, 0.99) if probed.refused_ms else None,
        "reject_p50_ms": (statistics.median(probed.refused_ms) if probed.refused_ms
                          else None),
        "accepted_within_deadline": (accepted - not_within) / accepted if accepted else None,
        "overload": {
            "sent": sent, "refused": refused, "accepted": accepted,
            "load_sent": len(result.get("errors", [])), "load_refused": load_refused,
            "refused_share": refused / sent if sent else 0.0,
            "accepted_late_or_failed": not_within,
            "gateway_deadline_exceeded": deadline_exceeded,
            "other_errors": errors, "probe_refusals": len(probed.refused_ms),
            "probe_accepted": len(probed.accepted_ms),
            "retry_after_ms_distinct": len(set(probed.retry_after_ms)),
            "retry_after_ms_range": ([min(probed.retry_after_ms), max(probed.retry_after_ms)]
                                     if probed.retry_after_ms else None),
            "left_running_after": left_running, "deadline_s": deadline_s,
            "answered_rps": result["request_throughput"]}}


@dataclass
class Answered:
    """One request of the labelled pass: how the mesh answered it."""

    cache_status: str
    text: str


async def labelled_pass(base_url: str, key: str, stream: Sequence[Request],
                        concurrency: int) -> list[Answered]:
    """Send `stream` in order (at most `concurrency` at once, each after the earlier
    ones were sent) through the official `openai` client; each answer's text and the
    cache status from its `cascade` metadata."""
    import openai

    api = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=2,
                             timeout=300)
    gate = asyncio.Semaphore(concurrency)

    async def one(r: Request) -> Answered:
        async with gate:
            reply = await api.chat.completions.create(
                model="cascade-mesh", max_tokens=r.output_tokens, temperature=0,
                messages=[{"role": "user", "content": r.prompt}])
            meta = (reply.model_extra or {}).get("cascade") or {}
            return Answered(str(meta.get("cache_status", "")),
                            reply.choices[0].message.content or "")

    try:
        tasks = []
        for r in stream:
            tasks.append(asyncio.create_task(one(r)))
            await asyncio.sleep(0)  # sent in stream order
        return list(await asyncio.gather(*tasks))
    finally:
        await api.close()


def wrong_hits(stream: Sequence[Request], answers: Sequence[Answered],
               pools: Pools) -> dict[str, Any]:
    """Hits, and the hits that served another question's answer: a hit is right when an
    earlier request of the same question (same prompt, its repeat or paraphrase) was
    answered from a model with exactly the served text."""
    group: list[int] = []
    by_prompt: dict[str, int] = {}
    for i, r in enumerate(stream):
        g = group[r.same_as] if r.same_as >= 0 else by_prompt.get(r.prompt, i)
        for other in pools.paraphrases.get(r.prompt, []):  # the same question, unlabelled
            g = min(g, by_prompt.get(other, g))
        group.append(g)
        by_prompt.setdefault(r.prompt, g)
    hits = wrong = 0
    for i, a in enumerate(answers):
        if a.cache_status != "hit":
            continue
        hits += 1
        if not any(group[j] == group[i] and answers[j].cache_status != "hit"
                   and answers[j].text == a.text for j in range(i)):
            wrong += 1
    return {"m1_wrong_hit_share": wrong / hits if hits else 0.0,
            "labelled": {"requests": len(stream), "hits": hits, "wrong_hits": wrong,
                         "asked_again": sum(r.same_as >= 0 for r in stream)}}
