"""`cmesh bench system --quick --json`: vLLM's own server and the mesh, driven by vLLM's
benchmark client, end to end (two SmolLM2 engines, nats, every service, LiteLLM's proxy
from scripts/setup.sh): closed-loop rounds, the labelled pass, the open-loop ladder and
the overload run; about 12 minutes on two cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(1500)]
KEYS = ("m0_vs_vllm_throughput", "m0_added_ttft_p50_ms", "litellm_added_ttft_p50_ms",
        "m1_vs_vllm_rps_repeat60", "m1_vs_vllm_ttft_repeat60", "m1_wrong_hit_share",
        "reject_p99_ms", "accepted_within_deadline", "rss_growth_max")


def test_quick_run_reports_every_key_of_issue_19(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "cmesh.cli", "bench", "system", "--quick",
                          "--json", "--out", str(tmp_path / "report")], capture_output=True,
                         text=True, timeout=1400, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(KEYS) <= set(figures)
    for key in KEYS:  # measured, or null with the reason said
        assert figures[key] is not None or key in figures["not_measured"], key
    assert figures["m0_vs_vllm_throughput"] > 0 and figures["m1_vs_vllm_rps_repeat60"] > 0
    assert figures["litellm_added_ttft_p50_ms"] is not None  # L measured beside V and M0
    assert figures["litellm_vs_vllm_throughput"] > 0
    assert not any(figures["failed"].values())  # every request of every side answered
    assert set(figures["rss_mib_end"]) >= {"vllm-server", "litellm-proxy", "backend-small",
                                            "gateway", "cache"}
    assert set(figures["not_measured"]) == {"soak"}  # only with --soak
    # the ladder ran both sides; the overload run turned some away, fast, with a hint
    assert {"V", "M0"} <= set(figures["ladder"]) and figures["sustainable_rps"]["V"]
    assert set(figures["ladder_repeat60"]) == {"V", "M1"}  # the payoff at sustained rates
    assert figures["sustainable_rps_repeat60"]["V"]
    assert figures["m1_in_flight_matches"] >= 0
    overload = figures["overload"]
    assert overload["load_sent"] > 0 and overload["refused"] > 0, overload
    assert overload["retry_after_ms_range"][0] > 0
    assert overload["left_running_after"] == 0  # nothing still running in the backend
    assert 0 <= figures["m1_wrong_hit_share"] <= 1 and figures["labelled"]["hits"] >= 0
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "figures.json", "report.md", "latency-vs-load.png", "throughput-vs-repeat.png"}
