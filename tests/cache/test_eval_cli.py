"""`cmesh cache eval` on a small subset, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cmesh.cli import app

DATA = Path(__file__).resolve().parents[2] / "data" / "gptcache"


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["cache", "eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_eval_mock_subset() -> None:
    fig = _run("--pairs", str(DATA / "mock_data.json"), "--limit", "120", "--delta", "0.25")
    assert {"n", "hits", "wrong_hits", "misses", "wrong_share", "recall"} <= fig.keys()
    assert fig["n"] == 120 and fig["hits"] + fig["misses"] == 120
    assert fig["recall"] >= 0.3 and fig["wrong_share"] <= 0.1
    assert "static_0.90_wrong_share" in fig


def test_eval_qqp_uses_held_out_part_only() -> None:
    fig = _run("--pairs", str(DATA / "qqp_pairs_dev.json.gz"), "--limit", "150",
               "--delta", "0.05")
    assert fig["held_out_part_only"] is True and fig["n"] == 150
    assert fig["threshold"] > 0.5
