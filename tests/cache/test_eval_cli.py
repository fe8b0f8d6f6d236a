"""`cmesh cache eval` and `cmesh cache calibrate` on small inputs, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmesh.cli import app

pytestmark = pytest.mark.slow  # trains, evaluates or starts a process: not in --unit

DATA = Path(__file__).resolve().parents[2] / "data"
HAND = DATA / "cache" / "handwritten_pairs.json"


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["cache", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_eval_mock_subset_reports_parts() -> None:
    fig = _run("eval", "--pairs", str(DATA / "gptcache" / "mock_data.json"), "--limit", "80",
               "--delta", "0.15", "--json")
    assert {"n", "hits", "wrong_hits", "misses", "wrong_share", "recall"} <= fig.keys()
    assert fig["n"] == 80 and fig["hits"] + fig["misses"] == 80
    assert fig["evaluated"].startswith("eval half") and "mock_data.json" in fig["calibrated_on"]
    assert fig["training_overlap"]["texts_in_training"] == 0
    assert fig["recall"] >= 0.3 and "static_0.90_wrong_share" in fig
    assert fig["at_delta"]["0.05"]["hits"] <= fig["hits"]


def test_eval_qqp_uses_held_out_part_only() -> None:
    fig = _run("eval", "--pairs", str(DATA / "gptcache" / "qqp_pairs_dev.json.gz"),
               "--limit", "60", "--delta", "0.1", "--json")
    assert fig["evaluated"].startswith("eval part of the 60/15/25 split") and fig["n"] == 60
    assert fig["training_overlap"]["texts_in_training"] == 0  # no text crosses parts


def test_calibrate_then_eval_on_own_pairs(tmp_path: Path) -> None:
    table = tmp_path / "mine.npz"
    result = CliRunner().invoke(app, ["cache", "calibrate", "--pairs", str(HAND),
                                      "--out", str(table)])
    assert result.exit_code == 0, result.output
    bounds = json.loads(table.with_suffix(".json").read_text())["bounds"]
    assert bounds["0.05"]["threshold"] >= bounds["0.2"]["threshold"]
    fig = _run("eval", "--pairs", str(HAND), "--calibrate-on", str(HAND), "--delta", "0.05",
               "--json")
    assert fig["calibrated_on"].startswith("handwritten_pairs.json (calib half")
    assert fig["paraphrases"] + fig["look_alikes"] == fig["n"]
    assert fig["look_alike_hit_rate"] <= 0.1
