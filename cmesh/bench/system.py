"""`cmesh bench system`: the mesh beside vLLM's own OpenAI server on the same model and
engine settings, both driven by vLLM's benchmark client (`python -m vllm.benchmarks.serve`)
with the same workload files (`cmesh.bench.workloads`), A-B-B-A rounds. The client runs
through `cmesh.bench.vllm_client` (vLLM's own parser and main; the module has no
`__main__`).

Configurations, all on this machine:
- **V**: `python -m vllm.entrypoints.openai.api_server` on the prepared SmolLM2 with the
  mesh backend's engine settings (dtype chosen the same way, KV size, max_num_seqs,
  max_model_len, prefix caching, eager);
- **L**: LiteLLM's proxy in front of V (its own venv, `.venv/litellm`, made by
  scripts/setup.sh; one worker, a master key, caching off, no database), what a user
  puts in front of vLLM for keys and routing;
- **M0**: the mesh through its OpenAI door (gateway -> classifier -> broker -> backend),
  cache skipped (`x-cmesh-skip-cache`);
- **M1**: the same mesh with its cache on.
Each round draws a fresh stream (its own seed) and, for the mesh, its own tenant, so no
round finds the previous round's answers cached or its prompts prefix-cached.

Closed loop (A-B-B-A rounds at a fixed concurrency): `m0_vs_vllm_throughput` (output
tokens/s on `unique`), `m0_added_ttft_p50_ms`, `litellm_added_ttft_p50_ms` and
`litellm_vs_vllm_throughput` (L against V on the same rounds), `m1_vs_vllm_rps_repeat60`,
`m1_vs_vllm_ttft_repeat60`. Then (`cmesh.bench.load`): the labelled pass
(`m1_wrong_hit_share`), the open-loop ladder of V and M0 on `unique` (`ladder`,
`sustainable_rps`), the same ladder of V and M1 on `repeat60` (`ladder_repeat60`,
`sustainable_rps_repeat60`, `m1_vs_vllm_sustainable_repeat60`: the highest rate each
sustains, one new tenant per rung for M1, and `m1_vs_vllm_ttft_sustained_repeat60`, M1's
TTFT p50 over V's at the highest rate V sustains), the overload run at twice M0's
sustainable rate (`reject_p99_ms`, `accepted_within_deadline`, `overload`), with
`--soak` ten minutes at M0's sustainable rate on `repeat30` (`soak`). `rss_growth_max`:
each mesh service's RSS at the end over its RSS after warm-up, the most (every
process's in `rss_growth`). Null keys say why in `not_measured` (the soak without
`--soak`, LiteLLM's where its venv is missing). `--out DIR` writes the figures, a
markdown table and PNG plots (`system_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmesh import terminate
from cmesh.bench.fair import Sample, compare, percentile
from cmesh.bench.load import (
    RunAt,
    Rung,
    errors_by_reason,
    labelled_pass,
    ladder,
    overload_figures,
    probe,
    sustainable,
    wrong_hits,
)
from cmesh.bench.workloads import MIX, Pools, build, write
from cmesh.output import console, emit

SERVED = "small"
OUTSIDE = ("vllm-server", "litellm-proxy")  # processes that are not the mesh's
LITELLM = Path(__file__).resolve().parents[2] / ".venv" / "litellm" / "bin" / "litellm"
NO_LITELLM = {"litellm_added_ttft_p50_ms": f"LiteLLM's proxy is not installed ({LITELLM}; "
              "scripts/setup.sh makes it)"}
def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB), from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def vllm_server(model: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """vLLM's own OpenAI server with the settings the mesh backend uses (its own group)."""
    from services.backend.dtype import resolve_here
    from services.backend.settings import BackendSettings

    s = BackendSettings(port=0)
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--served-model-name", SERVED, "--dtype", resolve_here(s.dtype).dtype,
            "--max-model-len", str(s.max_model_len), "--max-num-seqs", str(s.max_num_seqs),
            "--kv-cache-memory-bytes", str(int(s.kv_cache_gib * 2**30)),
            "--host", "127.0.0.1", "--port", str(port)]
    args += ["--enable-prefix-caching"] if s.enable_prefix_caching else []
    args += ["--enforce-eager"] if s.enforce_eager else []
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(s.kv_cache_gib)))}
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def litellm_proxy(v_url: str, port: int, work: Path, master_key: str
                  ) -> subprocess.Popen[bytes]:
    """LiteLLM's proxy on `port` in front of vLLM's server at `v_url` (its own group):
    model `small` -> `hosted_vllm/small`, clients with `master_key` (it refuses to start
    without one), no cache, no database, no network lookups."""
    config = work / "litellm.yaml"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the key
    with os.fdopen(fd, "w") as out:
        json.dump({  # YAML is a superset of JSON
            "model_list": [{"model_name": SERVED, "litellm_params": {
                "model": f"hosted_vllm/{SERVED}", "api_base": f"{v_url}/v1",
                "api_key": "none"}}],
            "litellm_settings": {"cache": False, "telemetry": False, "drop_params": True},
            "general_settings": {"disable_spend_logs": True, "master_key": master_key},
        }, out, indent=2)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    args = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]
    return subprocess.Popen(args, stdout=(work / "litellm.log").open("wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server's process group; SIGKILL it after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            await asyncio.sleep(1)
    raise TimeoutError(f"{url} not ready in {timeout} s")


async def client(base_url: str, model: str, tokenizer: str, dataset: Path, n: int,
                 concurrency: int | None, key: str, out: Path,
                 headers: tuple[str, ...] = (), rate: float | None = None) -> dict[str, Any]:
    """One run of vLLM's benchmark client (`cmesh.bench.vllm_client`); its result JSON.
    Closed loop at `concurrency`, or open loop (Poisson arrivals at `rate` a second,
    no cap on concurrency)."""
    args = [sys.executable, "-m", "cmesh.bench.vllm_client", "--backend", "openai-chat",
            "--base-url", base_url, "--endpoint", "/v1/chat/completions", "--model", model,
            "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path",
            str(dataset), "--disable-shuffle", "--skip-chat-template",
            "--custom-output-len", "-1", "--num-prompts", str(n),
            "--request-rate", "inf" if rate is None else f"{rate:.4f}", "--temperature", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99",
            "--save-result", "--save-detailed", "--result-dir", str(out.parent),
            "--result-filename", out.name, "--disable-tqdm", "--num-warmups", "0"]
    if concurrency is not None:
        args += ["--max-concurrency", str(concurrency)]
    if headers:
        args += ["--header", *headers]
    env = {**os.environ, "OPENAI_API_KEY": key}
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"vllm.benchmarks.serve failed ({proc.returncode}): "
                           f"{err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@dataclass(frozen=True)
class Plan:
    """How much one run of the bench does (`--quick` or full)."""

    n: int                  # requests per closed-loop round
    concurrency: int
    rounds: int
    labelled: int           # requests of the labelled (wrong-hit) pass
    ladder: tuple[float, ...]  # rungs, as multiples of V's closed-loop request rate
    rung_s: float           # seconds of arrivals per rung
    overload_s: float
    deadline_s: float       # each overload request's deadline
    soak_s: float           # 0: no soak

    @classmethod
    def of(cls, quick: bool, soak: bool = False) -> Plan:
        soak_s = 600 if soak else 0
        if quick:
            return cls(12, 4, 2, 24, (0.5, 1.5, 3.0), 8, 20, 10, soak_s)
        return cls(48, 8, 2, 48, (0.25, 0.5, 1.0, 2.0, 3.0), 20, 60, 20, soak_s)


async def _bench(quick: bool, soak: bool = False) -> dict[str, Any]:
    from cmesh.bench.mesh import door_gateway, one_engine_mesh
    from cmesh.stack import DOOR_PORT_FILE, LocalStack, ensure_dev_keys
    from services.backend.engine import default_model
    from services.backend.settings import BackendSettings
    from services.common.natsd import free_port

    plan = Plan.of(quick, soak)
    n, concurrency, rounds = plan.n, plan.concurrency, plan.rounds
    work = Path(tempfile.mkdtemp(prefix="cmesh-bench-system-"))
    model = default_model()
    pools = Pools.load()
    rungs_repeat = [f"rung{i}" for i in range(len(plan.ladder))]  # M1's tenant per rung
    tenants = [f"r{r}" for r in range(-1, rounds)] + ["label", "load", "soak", *rungs_repeat]
    keys_file = ensure_dev_keys(work, tenants)
    keys = {t: (work / f"{t}-api-key").read_text().strip() for t in tenants}
    files: dict[tuple[str, int], Path] = {}
    for name in ("unique", "repeat60"):
        for r in range(-1, rounds):
            stream = build(name, n, tenants=("bench",), seed=100 + r, pools=pools)
            files[(name, r)] = write(stream, work / f"{name}-{r}", name)["bench"]
    labelled = build("repeat60", plan.labelled, tenants=("label",), seed=7, pools=pools)

    def open_file(name: str, count: int, seed: int) -> Path:
        stream = build(name, count, tenants=("load",), seed=seed, pools=pools)
        return write(stream, work / f"{name}-open-{seed}", name)["load"]

    v_port, l_port = free_port(), free_port()
    l_key = f"sk-bench-{secrets.token_urlsafe(24)}"
    v_url, l_url = f"http://127.0.0.1:{v_port}", f"http://127.0.0.1:{l_port}"
    console.print("starting vLLM's OpenAI server (V)...")
    v_proc = vllm_server(model, v_port, work / "vllm-server.log")
    l_proc: subprocess.Popen[bytes] | None = None
    results: dict[str, list[dict[str, Any]]] = {}
    extra: dict[str, Any] = {}
    # both tiers share the one engine: each tier's admission counts half its slots
    slots = str(max(1, BackendSettings(port=0).max_num_seqs // 2))
    try:
        # one after the other: two engines starting at once on two cores starve NATS
        await wait_ready(f"{v_url}/v1/models", v_proc)
        if LITELLM.is_file():
            console.print("starting LiteLLM's proxy in front of V (L)...")
            l_proc = litellm_proxy(v_url, l_port, work, l_key)
            await wait_ready(f"{l_url}/health/liveliness", l_proc, timeout=180)
        console.print("starting the mesh (M: nats, backend, cache, classifier, broker, "
                      "gateway with its door)...")
        peers = door_gateway(keys_file, work / DOOR_PORT_FILE)
        async with LocalStack(one_engine_mesh(
                lambda a: [*peers(a), "--tier_concurrency", slots]), work / "stack") as stack, \
                progress_bar() as stack_progress:
            m_url = f"http://127.0.0.1:{(work / DOOR_PORT_FILE).read_text().strip()}"
            skip = ("x-cmesh-skip-cache=1",)

            def side(tag: str, workload: str) -> Any:
                async def one_round(r: int) -> Sample:
                    out = work / f"{tag}-{workload}-{r}.json"
                    if tag in ("V", "L"):
                        res = await client(v_url if tag == "V" else l_url, SERVED, model,
                                           files[(workload, r)], n, concurrency,
                                           "none" if tag == "V" else l_key, out)
                    else:
                        res = await client(m_url, "cascade-mesh", model,
                                           files[(workload, r)], n, concurrency,
                                           keys[f"r{r}"], out, skip if tag == "M0" else ())
                    if r >= 0:
                        results.setdefault(f"{tag}/{workload}", []).append(res)
                    return Sample(work=res["completed"], seconds=res["duration"],
                                  latencies=[t for t in res.get("ttfts", []) if t])
                return one_round

            def open_loop(tag: str, name: str = "unique", headers: tuple[str, ...] = (),
                          key: str | list[str] = "load", span_s: float = plan.rung_s) -> RunAt:
                """`key`: the tenant, or one per rung (so no rung finds another's answers
                cached)."""
                async def run(rate: float, rung: int) -> dict[str, Any]:
                    count = max(4, round(rate * span_s))
                    dataset = open_file(name, count, 1000 + rung)
                    out = work / f"open-{tag}-{name}-{rung}.json"
                    if tag == "V":
                        return await client(v_url, SERVED, model, dataset, count, None,
                                            "none", out, rate=rate)
                    tenant = key if isinstance(key, str) else key[rung]
                    return await client(m_url, "cascade-mesh", model, dataset, count, None,
                                        keys[tenant], out, headers, rate=rate)
                return run

            servers = dict(zip(OUTSIDE, (v_proc, l_proc), strict=True))
            servers = {k: p for k, p in servers.items() if p is not None}
            warm = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
            warm |= {name: rss_mib(p.pid) for name, p in servers.items()}
            unique = {"V": side("V", "unique"), "M0": side("M0", "unique")}
            if l_proc is not None:
                unique["L"] = side("L", "unique")
            steps = (len(unique) + 2) * rounds + 1 + 4 * len(plan.ladder) + 1 + bool(
                plan.soak_s)
            bar = stack_progress.add_task("cmesh bench system", total=steps)

            def step(line: str) -> None:
                console.print(line)
                stack_progress.advance(bar)

            before = _mix(stack)
            await compare(unique, rounds, report=step)
            middle = _mix(stack)
            await compare({"V": side("V", "repeat60"), "M1": side("M1", "repeat60")}, rounds,
                          warmup=0, report=step)
            extra["mesh_mix"] = {"M0/unique": _mix_between(before, middle),
                                 "M1/repeat60": _mix_between(middle, _mix(stack))}
            hits = _hit_share(stack)

            console.print(f"labelled pass: {len(labelled)} requests, cache on, to count "
                          "wrong hits...")
            answers = await labelled_pass(m_url, keys["label"], labelled, concurrency)
            extra |= wrong_hits(labelled, answers, pools)
            step(f"  labelled: {extra['labelled']['hits']} hits, "
                 f"{extra['labelled']['wrong_hits']} wrong")

            base = rate_of(results["V/unique"], "request_throughput")
            rates = [round(f * base, 3) for f in plan.ladder]
            console.print(f"open-loop ladder on unique: {rates} req/s, V and M0...")
            rungs = await ladder({"V": open_loop("V"), "M0": open_loop("M0", headers=skip)},
                                 rates, step)
            extra["ladder"] = {k: [r.summary() for r in v] for k, v in rungs.items()}
            extra["sustainable_rps"] = {k: sustainable(v) for k, v in rungs.items()}
            console.print(f"open-loop ladder on repeat60: {rates} req/s, V and M1...")
            repeat = await ladder({"V": open_loop("V", "repeat60"),
                                   "M1": open_loop("M1", "repeat60", key=rungs_repeat)},
                                  rates, step)
            extra |= _repeat_ladder_figures(repeat)
            extra["m1_in_flight_matches"] = _metric(stack, "cache",
                                                    "cache_in_flight_matches_total")
            m0_rate = extra["sustainable_rps"]["M0"] or rates[0]
            timed = (*skip, f"x-cmesh-timeout-s={plan.deadline_s}")
            extra |= await _overload(stack, m_url, keys["load"], 2 * m0_rate, plan, pools,
                                     open_loop("M0", headers=timed, span_s=plan.overload_s))
            stack_progress.advance(bar)
            if plan.soak_s:  # the mesh with its cache on, at M0's sustainable rate
                extra["soak"] = await _soak(stack, m0_rate, plan.soak_s, open_loop(
                    "M1", "repeat30", key="soak", span_s=plan.soak_s))
            stack_progress.update(bar, completed=steps)
            end = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
            end |= {name: rss_mib(p.pid) for name, p in servers.items()}
    finally:
        for proc in (l_proc, v_proc):
            if proc is not None:
                stop_group(proc)
    return _figures(results, warm, end, hits, plan, work) | extra


@contextlib.asynccontextmanager
async def progress_bar() -> AsyncIterator[Any]:
    """A bar over the bench's steps (rounds, pass, rungs, overload, soak), under the log."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        yield bar


def rate_of(runs: list[dict[str, Any]], field: str) -> float:
    """A client field's rate (per second) over several runs, weighted by their duration."""
    total = sum(r[field] * r["duration"] for r in runs)
    return total / sum(r["duration"] for r in runs)


def _metric(stack: Any, service: str, name: str, **match: str) -> float:
    """The sum of a service's samples of `name` whose labels contain `match` (values as
    substrings); 0 when unreadable."""
    from cmesh.commands.gateway import samples, scrape

    body = scrape(stack.services[service].metrics_port) or ""
    return sum(v for labels, v in samples(body, name)
               if all(want in labels.get(k, "") for k, want in match.items()))


def _mix(stack: Any) -> dict[str, float]:
    """The gateway's answers by tier and outcome and its cost counters, now."""
    from cmesh.commands.gateway import samples, scrape

    body = scrape(stack.services["gateway"].metrics_port) or ""
    out = {f"{labels.get('tier')}/{labels.get('outcome')}": v
           for labels, v in samples(body, "gateway_requests_total")}
    for name in ("gateway_cost_total", "gateway_cost_if_top_tier_total"):
        out[name] = sum(v for _, v in samples(body, name))
    return out


def _mix_between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Tier mix, outcomes and the saving against sending everything to the largest tier,
    over the answers between two `_mix` readings (warm-up rounds included)."""
    diff = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    cost = diff.pop("gateway_cost_total", 0.0)
    top = diff.pop("gateway_cost_if_top_tier_total", 0.0)
    tiers: dict[str, float] = {}
    for key, n in diff.items():
        tiers[key.split("/")[0]] = tiers.get(key.split("/")[0], 0.0) + n
    return {"answers_by_tier_outcome": {k: v for k, v in diff.items() if v},
            "tier_share": {t: n / sum(tiers.values()) for t, n in tiers.items() if n},
            "cost": cost, "cost_if_all_large": top,
            "saving_vs_all_large": 1 - cost / top if top else None}


async def _settled_unfinished(stack: Any, wait_s: float = 15) -> float:
    """The backend's unfinished requests once they reach 0 or `wait_s` has passed."""
    give_up = time.monotonic() + wait_s
    while True:
        left = _metric(stack, "backend-small", "backend_engine_unfinished_requests")
        if left == 0 or time.monotonic() > give_up:
            return left
        await asyncio.sleep(0.5)


async def _overload(stack: Any, m_url: str, key: str, rate: float, plan: Plan,
                    pools: Pools, run: RunAt) -> dict[str, Any]:
    """M0 at `rate` (twice its sustainable rate) for `plan.overload_s` (`run` sends each
    request with `plan.deadline_s`), a refusal probe beside it."""
    console.print(f"overload: {rate:.2f} req/s for {plan.overload_s:.0f} s, deadline "
                  f"{plan.deadline_s:.0f} s, probing refusals...")
    before = _metric(stack, "gateway", "gateway_errors_total", code="DEADLINE")
    stop = asyncio.Event()
    longest = max(high for _, _, (_, high) in MIX)
    probing = asyncio.create_task(probe(m_url, key, pools.chat, plan.deadline_s, stop,
                                        {"x-cmesh-skip-cache": "1"}, longest))
    try:
        result = await run(rate, 999)
    finally:
        stop.set()
    probed = await probing
    left = await _settled_unfinished(stack)
    exceeded = _metric(stack, "gateway", "gateway_errors_total", code="DEADLINE") - before
    figures = overload_figures(result, probed, plan.deadline_s, exceeded, left)
    figures["overload"]["offered_rps"] = rate
    console.print(f"  refused {figures['overload']['refused']} of "
                  f"{figures['overload']['sent']}, refusal p99 "
                  f"{figures['reject_p99_ms'] or 0:.1f} ms, accepted within deadline "
                  f"{figures['accepted_within_deadline']}")
    return figures


async def _soak(stack: Any, rate: float, seconds: float, run: RunAt) -> dict[str, Any]:
    """The mesh on repeat30 at M0's sustainable rate for `seconds`: errors, RSS."""
    console.print(f"soak: {rate:.2f} req/s on repeat30 for {seconds:.0f} s...")
    before = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
    result = await run(rate, 2000)
    after = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
    return {"rate_rps": rate, "seconds": seconds, "requests": len(result.get("errors", [])),
            "errors": errors_by_reason(result), "rss_mib_before": before,
            "rss_mib_after": after,
            "rss_growth_max": max(after[k] / before[k] - 1 for k in before if before[k] > 0)}


def _repeat_ladder_figures(rungs: dict[str, list[Rung]]) -> dict[str, Any]:
    """The `repeat60` ladder's figures: each side's rungs and highest sustained rate, M1's
    over V's, and M1's TTFT p50 over V's at the highest rate V sustains (None where a side
    sustained no rung, or M1 did not run V's)."""
    best = {k: sustainable(v) for k, v in rungs.items()}
    v_best, m1_best = best["V"], best["M1"]
    at = {k: next((r for r in v if r.rate == v_best), None) for k, v in rungs.items()}
    p50 = {k: r.summary()["ttft_p50_ms"] if r is not None else None for k, r in at.items()}
    return {
        "ladder_repeat60": {k: [r.summary() for r in v] for k, v in rungs.items()},
        "sustainable_rps_repeat60": best,
        "m1_vs_vllm_sustainable_repeat60": (m1_best / v_best if v_best and m1_best
                                            else None),
        "m1_vs_vllm_ttft_sustained_repeat60": (p50["M1"] / p50["V"] if p50["V"]
                                               and p50["M1"] is not None else None),
    }


def _hit_share(stack: Any) -> float | None:
    """The cache's hits over its lookups, from its metrics (None when unreadable)."""
    lookups = _metric(stack, "cache", "cache_lookups_total")
    return _metric(stack, "cache", "cache_hits_total") / lookups if lookups else None


def _figures(results: dict[str, list[dict[str, Any]]], warm: dict[str, float],
             end: dict[str, float], hits: float | None, plan: Plan,
             work: Path) -> dict[str, Any]:
    def rate(key: str, field: str) -> float:
        return rate_of(results[key], field)

    def ttft_p50(key: str) -> float:
        import statistics
        return statistics.median(t for r in results[key] for t in r.get("ttfts", []) if t) * 1000

    failed = {k: sum(r["failed"] for r in v) for k, v in results.items()}
    out: dict[str, Any] = {
        "m0_vs_vllm_throughput": rate("M0/unique", "output_throughput")
        / rate("V/unique", "output_throughput"),
        "m0_added_ttft_p50_ms": ttft_p50("M0/unique") - ttft_p50("V/unique"),
        "litellm_added_ttft_p50_ms": (ttft_p50("L/unique") - ttft_p50("V/unique")
                                      if "L/unique" in results else None),
        "litellm_vs_vllm_throughput": (rate("L/unique", "output_throughput")
                                       / rate("V/unique", "output_throughput")
                                       if "L/unique" in results else None),
        "m1_vs_vllm_rps_repeat60": rate("M1/repeat60", "request_throughput")
        / rate("V/repeat60", "request_throughput"),
        "m1_vs_vllm_ttft_repeat60": ttft_p50("M1/repeat60") / ttft_p50("V/repeat60"),
        "rss_growth_max": max(end[k] / warm[k] - 1 for k in warm
                              if warm[k] > 0 and k not in OUTSIDE),
        "rss_growth": {k: end[k] / warm[k] - 1 for k in warm if warm[k] > 0},
        "m1_cache_hit_share": hits,
        "ttft_p50_ms": {k: ttft_p50(k) for k in results},
        "requests_per_s": {k: rate(k, "request_throughput") for k in results},
        "output_tokens_per_s": {k: rate(k, "output_throughput") for k in results},
        "failed": failed,
        "latency_ms": {k: _percentiles(v) for k, v in results.items()},
        "errors_by_status": {k: errors_by_reason({"errors": [e for r in v
                                                             for e in r.get("errors", [])]})
                             for k, v in results.items()},
        "rss_mib_after_warmup": warm, "rss_mib_end": end,
        "requests_per_round": plan.n, "concurrency": plan.concurrency, "rounds": plan.rounds,
        "client": "vllm.benchmarks.serve (custom dataset; closed loop, then Poisson "
                  "arrivals); refusal probe and labelled pass: the openai client",
        "results_dir": str(work),
    }
    missing = {**({"soak": "with --soak only (10 minutes)"} if not plan.soak_s else {}),
               **(NO_LITELLM if "L/unique" not in results else {})}
    out["not_measured"] = missing
    out |= dict.fromkeys(missing)
    return out


def _percentiles(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """TTFT, inter-token and end-to-end latency p50/p95/p99 (ms) pooled over rounds."""
    pools = {"ttft": [t for r in runs for t in r.get("ttfts", []) if t],
             "itl": [x for r in runs for itl in r.get("itls", []) for x in itl],
             "e2e": [t for r in runs for t in r.get("latencies", []) if t]}
    return {f"{name}_p{q}": percentile(xs, q / 100) * 1000 if xs else None
            for name, xs in pools.items() for q in (50, 95, 99)}


def main(quick: bool = False, as_json: bool = False, out: Path | None = None,
         soak: bool = False) -> None:
    figures = terminate.run(_bench(quick, soak))
    if out is not None:
        from cmesh.bench.system_report import write_report
        write_report(figures, out)
    emit("cmesh bench system", figures, as_json)
