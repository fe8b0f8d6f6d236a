"""`cmesh bench regions --quick --json`: two regions of a real supercluster, a SmolLM2
backend and a broker in each, a cache per region; about 2.5 minutes on two cores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(1200)]
KEYS = ("failover_ttft_added_ms", "failover_detect_ms", "replication_lag_p50_ms",
        "replication_lag_p99_ms")


def test_quick_run_reports_every_key_of_issue_21() -> None:
    run = subprocess.run([sys.executable, "-m", "cmesh.cli", "bench", "regions", "--quick",
                          "--json"], capture_output=True, text=True, timeout=1100,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(KEYS) <= set(figures)
    assert all(math.isfinite(figures[k]) for k in KEYS)
    # b took over after a's backend died, and a took its traffic back once it returned
    assert 0 < figures["failover_detect_ms"] < 30_000
    assert 0 < figures["failback_ms"] < 60_000
    assert 0 < figures["replication_lag_p50_ms"] <= figures["replication_lag_p99_ms"] < 30_000
    assert figures["ttft_jobs_per_side"] > 0 and "RTT" in figures["note"]
