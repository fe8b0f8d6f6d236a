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

Keys: `m0_vs_vllm_throughput` (output tokens/s on `unique` at a fixed concurrency),
`m0_added_ttft_p50_ms`, `litellm_added_ttft_p50_ms` and `litellm_vs_vllm_throughput`
(L against V on the same rounds), `m1_vs_vllm_rps_repeat60`, `m1_vs_vllm_ttft_repeat60`,
`rss_growth_max` (each mesh service's RSS at the end over after warm-up, the most), the
hit share of M1, and each configuration's processes and RSS. Not measured yet (null,
with the reason in `not_measured`): the open-loop rate ladder, the overload and soak
runs of issue 19 (and LiteLLM's keys where its venv is missing).
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
from pathlib import Path
from typing import Any

from cmesh.bench.fair import Sample, compare
from cmesh.bench.workloads import Pools, build, write
from cmesh.output import console, emit

SERVED = "small"
LITELLM = Path(__file__).resolve().parents[2] / ".venv" / "litellm" / "bin" / "litellm"
NO_LITELLM = {"litellm_added_ttft_p50_ms": f"LiteLLM's proxy is not installed ({LITELLM}; "
              "scripts/setup.sh makes it)"}
NOT_MEASURED = {
    "reject_p99_ms": "the overload run (2x M0's sustainable rate for 60 s) is not built yet",
    "accepted_within_deadline": "the overload run is not built yet",
    "m1_wrong_hit_share": "the door does not report which entry a hit served",
}


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
                 concurrency: int, key: str, out: Path,
                 headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """One run of vLLM's benchmark client (`cmesh.bench.vllm_client`); its result JSON."""
    args = [sys.executable, "-m", "cmesh.bench.vllm_client", "--backend", "openai-chat",
            "--base-url", base_url, "--endpoint", "/v1/chat/completions", "--model", model,
            "--tokenizer", tokenizer, "--dataset-name", "custom", "--dataset-path",
            str(dataset), "--disable-shuffle", "--skip-chat-template",
            "--custom-output-len", "-1", "--num-prompts", str(n), "--max-concurrency",
            str(concurrency), "--request-rate", "inf", "--temperature", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,95,99",
            "--save-result", "--save-detailed", "--result-dir", str(out.parent),
            "--result-filename", out.name, "--disable-tqdm", "--num-warmups", "0"]
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


async def _bench(quick: bool) -> dict[str, Any]:
    from cmesh.bench.mesh import door_gateway, one_engine_mesh
    from cmesh.stack import DOOR_PORT_FILE, LocalStack, ensure_dev_keys
    from services.backend.engine import default_model
    from services.common.natsd import free_port

    n, concurrency, rounds = (12, 4, 2) if quick else (96, 8, 4)
    work = Path(tempfile.mkdtemp(prefix="cmesh-bench-system-"))
    model = default_model()
    pools = Pools.load()
    tenants = [f"r{r}" for r in range(-1, rounds)]  # -1: the warm-up round
    keys_file = ensure_dev_keys(work, tenants)
    keys = {t: (work / f"{t}-api-key").read_text().strip() for t in tenants}
    files: dict[tuple[str, int], Path] = {}
    for name in ("unique", "repeat60"):
        for r in range(-1, rounds):
            stream = build(name, n, tenants=("bench",), seed=100 + r, pools=pools)
            files[(name, r)] = write(stream, work / f"{name}-{r}", name)["bench"]


    v_port, l_port = free_port(), free_port()
    l_key = f"sk-bench-{secrets.token_urlsafe(24)}"
    v_url, l_url = f"http://127.0.0.1:{v_port}", f"http://127.0.0.1:{l_port}"
    console.print("starting vLLM's OpenAI server (V)...")
    v_proc = vllm_server(model, v_port, work / "vllm-server.log")
    l_proc: subprocess.Popen[bytes] | None = None
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        # one after the other: two engines starting at once on two cores starve NATS
        await wait_ready(f"{v_url}/v1/models", v_proc)
        if LITELLM.is_file():
            console.print("starting LiteLLM's proxy in front of V (L)...")
            l_proc = litellm_proxy(v_url, l_port, work, l_key)
            await wait_ready(f"{l_url}/health/liveliness", l_proc, timeout=180)
        console.print("starting the mesh (M: nats, backend, cache, classifier, broker, "
                      "gateway with its door)...")
        async with LocalStack(one_engine_mesh(door_gateway(keys_file, work / DOOR_PORT_FILE)),
                              work / "stack") as stack:
            m_url = f"http://127.0.0.1:{(work / DOOR_PORT_FILE).read_text().strip()}"

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
                                           keys[f"r{r}"], out,
                                           ("x-cmesh-skip-cache=1",) if tag == "M0" else ())
                    if r >= 0:
                        results.setdefault(f"{tag}/{workload}", []).append(res)
                    return Sample(work=res["completed"], seconds=res["duration"],
                                  latencies=[t for t in res.get("ttfts", []) if t])
                return one_round

            servers = {"vllm-server": v_proc, **({"litellm-proxy": l_proc} if l_proc else {})}
            warm = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
            warm |= {name: rss_mib(p.pid) for name, p in servers.items()}
            unique = {"V": side("V", "unique"), "M0": side("M0", "unique")}
            if l_proc is not None:
                unique["L"] = side("L", "unique")
            await compare(unique, rounds, report=console.print)
            await compare({"V": side("V", "repeat60"), "M1": side("M1", "repeat60")}, rounds,
                          warmup=0, report=console.print)
            end = {name: rss_mib(s.proc.pid) for name, s in stack.services.items()}
            end |= {name: rss_mib(p.pid) for name, p in servers.items()}
            hits = _hit_share(stack)
    finally:
        for proc in (l_proc, v_proc):
            if proc is not None:
                stop_group(proc)
    return _figures(results, warm, end, hits, n, concurrency, rounds, work)


def _hit_share(stack: Any) -> float | None:
    """The cache's hits over its lookups, from its metrics (None when unreadable)."""
    from cmesh.commands.gateway import samples, scrape

    body = scrape(stack.services["cache"].metrics_port)
    if body is None:
        return None
    lookups = sum(x for _, x in samples(body, "cache_lookups_total"))
    hits = sum(x for _, x in samples(body, "cache_hits_total"))
    return hits / lookups if lookups else None


def _figures(results: dict[str, list[dict[str, Any]]], warm: dict[str, float],
             end: dict[str, float], hits: float | None, n: int, concurrency: int,
             rounds: int, work: Path) -> dict[str, Any]:
    def rate(key: str, field: str) -> float:
        runs = results[key]
        total = sum(r[field] * r["duration"] for r in runs)
        return total / sum(r["duration"] for r in runs)

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
        "rss_growth_max": max(end[k] / warm[k] - 1 for k in warm if warm[k] > 0),
        "m1_cache_hit_share": hits,
        "ttft_p50_ms": {k: ttft_p50(k) for k in results},
        "requests_per_s": {k: rate(k, "request_throughput") for k in results},
        "output_tokens_per_s": {k: rate(k, "output_throughput") for k in results},
        "failed": failed,
        "rss_mib_after_warmup": warm, "rss_mib_end": end,
        "requests_per_round": n, "concurrency": concurrency, "rounds": rounds,
        "client": "vllm.benchmarks.serve (custom dataset, closed loop)",
        "results_dir": str(work),
    }
    missing = {**NOT_MEASURED, **(NO_LITELLM if "L/unique" not in results else {})}
    out["not_measured"] = missing
    out |= dict.fromkeys(missing)
    return out


def main(quick: bool = False, as_json: bool = False) -> None:
    figures = asyncio.run(_bench(quick))
    emit("cmesh bench system", figures, as_json)
