"""What `cmesh bench system --out DIR` writes: `figures.json`, `report.md` (the tables the
README's performance section takes) and two PNG plots: latency against offered load (one
line per configuration, from the open-loop ladder) and throughput against repeat share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cmesh.bench.workloads import REPEAT_SHARES

LABELS = {"V": "vLLM server (V)", "L": "LiteLLM -> V (L)", "M0": "mesh, cache off (M0)",
          "M1": "mesh, cache on (M1)"}


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def markdown(f: dict[str, Any]) -> str:
    """The closed-loop table, the ladder, the overload run and the keys."""
    lines = ["| configuration, workload | TTFT p50 | output tok/s | requests/s | failed |",
             "|---|---|---|---|---|"]
    for key in f["ttft_p50_ms"]:
        tag, workload = key.split("/")
        lines.append(f"| {LABELS.get(tag, tag)}, `{workload}` | {_ms(f['ttft_p50_ms'][key])} "
                     f"| {f['output_tokens_per_s'][key]:.1f} | "
                     f"{f['requests_per_s'][key]:.3f} | {f['failed'][key]} |")
    for key, mix in f.get("mesh_mix", {}).items():
        shares = ", ".join(f"{t} {x:.0%}" for t, x in sorted(mix["tier_share"].items()))
        saving = mix["saving_vs_all_large"]
        lines.append(f"\n{LABELS.get(key.split('/')[0])}, `{key.split('/')[1]}`: tiers "
                     f"{shares or '-'}; cost {mix['cost']:.3g} against "
                     f"{mix['cost_if_all_large']:.3g} all-large"
                     f"{'' if saving is None else f' (saving {saving:.0%})'}.")
    for workload, key in (("unique", "ladder"), ("repeat60", "ladder_repeat60")):
        if f.get(key):
            lines += ["", f"Open loop on `{workload}` (Poisson arrivals):", "",
                      *_ladder_table(f[key])]
    o = f.get("overload") or {}
    if o:
        within = f.get("accepted_within_deadline")
        load = (f" (the load's own: {o['load_sent']} sent, {o['load_refused']} refused)"
                if "load_sent" in o else "")
        lines += ["", f"Overload: M0 at {o['offered_rps']:.2f} req/s, deadline "
                  f"{o['deadline_s']:.0f} s: {o['sent']} sent with the probe's, "
                  f"{o['refused']} refused ({o['refused_share']:.0%}){load}, refusal "
                  f"p50/p99 {_ms(f.get('reject_p50_ms'))} / {_ms(f.get('reject_p99_ms'))}, "
                  f"accepted within deadline {'-' if within is None else f'{within:.3f}'}, "
                  f"left running after {o['left_running_after']:.0f}."]
    soak = f.get("soak")
    if soak:
        lines += ["", f"Soak: the mesh (cache on) at {soak['rate_rps']:.2f} req/s on "
                  f"`repeat30` for {soak['seconds']:.0f} s: {soak['requests']} requests, "
                  f"errors {soak['errors'] or 'none'}, RSS growth at most "
                  f"{soak['rss_growth_max']:.1%}."]
    keys = ("m0_vs_vllm_throughput", "m0_added_ttft_p50_ms", "litellm_added_ttft_p50_ms",
            "litellm_vs_vllm_throughput", "m1_vs_vllm_rps_repeat60",
            "m1_vs_vllm_ttft_repeat60", "m1_vs_vllm_sustainable_repeat60",
            "m1_vs_vllm_ttft_sustained_repeat60", "m1_wrong_hit_share", "m1_cache_hit_share",
            "m1_in_flight_matches",
            "reject_p99_ms", "accepted_within_deadline", "rss_growth_max")
    lines += ["", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {f.get(k) if not isinstance(f.get(k), float) else f'{f[k]:.3g}'} |"
              for k in keys]
    return "\n".join(lines) + "\n"


def _ladder_table(ladder: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| configuration | offered req/s | achieved req/s | TTFT p50 | TTFT p95 "
             "| TPOT p50 | TPOT p95 | e2e p95 | failed | sustained |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for tag, rungs in ladder.items():
        for r in rungs:
            lines.append(f"| {LABELS.get(tag, tag)} | {r['offered_rps']:.2f} | "
                         f"{r['achieved_rps']:.2f} | {_ms(r['ttft_p50_ms'])} | "
                         f"{_ms(r['ttft_p95_ms'])} | {_ms(r.get('tpot_p50_ms'))} | "
                         f"{_ms(r.get('tpot_p95_ms'))} | {_ms(r['e2e_p95_ms'])} | {r['failed']} "
                         f"| {'yes' if r['sustained'] else 'no'} |")
    return lines


def _save(fig: Any, ax: Any, path: Path, **labels: str) -> Path:
    ax.set(**labels)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plots(f: dict[str, Any], out: Path) -> list[Path]:
    """latency-vs-load.png and throughput-vs-repeat.png under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for tag, rungs in f.get("ladder", {}).items():
        seen = [r for r in rungs if r["ttft_p50_ms"] is not None]
        xs = [r["offered_rps"] for r in seen]
        (line,) = ax.plot(xs, [r["ttft_p50_ms"] for r in seen], marker="o",
                          label=f"{LABELS.get(tag, tag)} p50")
        ax.plot(xs, [r["ttft_p95_ms"] for r in seen], linestyle="--",
                color=line.get_color(), label=f"{LABELS.get(tag, tag)} p95")
    ax.set(yscale="log")
    made = [_save(fig, ax, out / "latency-vs-load.png",
                  xlabel="offered load (requests/s, Poisson)", ylabel="TTFT (ms)",
                  title="Latency against offered load (unique)")]
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for tag in ("V", "L", "M0", "M1"):
        points = sorted((REPEAT_SHARES[k.split("/")[1]], v)
                        for k, v in f["requests_per_s"].items() if k.split("/")[0] == tag)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=LABELS[tag])
    made.append(_save(fig, ax, out / "throughput-vs-repeat.png",
                      xlabel="share of requests asked again",
                      ylabel="requests/s (closed loop)",
                      title="Throughput against repeat share"))
    plt.close(fig)
    return made


def write_report(figures: dict[str, Any], out: Path) -> list[Path]:
    """Every file of the report under `out` (made if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=2, sort_keys=True,
                                                 default=float))
    (out / "report.md").write_text(markdown(figures))
    return [out / "figures.json", out / "report.md", *plots(figures, out)]
