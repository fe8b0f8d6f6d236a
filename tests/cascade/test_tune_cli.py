"""`cmesh tune` on RouteLLM's GSM8K table: thresholds the policy loads, a PNG, a CSV, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade.policy import Policy
from cascade.thresholds import load_thresholds
from cmesh.cli import app

pytestmark = pytest.mark.slow  # trains, evaluates or starts a process: not in --unit

GSM8K = Path(__file__).resolve().parents[2] / "data" / "routellm" / "gsm8k_responses.csv"


def test_tune_writes_thresholds_the_policy_loads_and_a_png(tmp_path: Path) -> None:
    out, png = tmp_path / "thresholds.json", tmp_path / "curve.png"
    result = CliRunner().invoke(app, [
        "tune", "--data", str(GSM8K), "--target", "strong-fraction=0.3",
        "--out", str(out), "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("n", "apgr", "cpt50", "cpt80", "acc_weak", "acc_strong", "random_apgr"):
        assert key in figures
    assert figures["n"] == 923
    assert figures["random_apgr"] == pytest.approx(0.5)
    assert 0.0 <= figures["cpt50"] <= figures["cpt80"] <= 1.0

    thresholds = load_thresholds(out)
    assert thresholds.calibration["target"] == "strong-fraction=0.3"
    policy = Policy("route", thresholds)
    assert policy.plan(thresholds.route("large")).tier == "large"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".csv").read_text().startswith("strong_share,threshold,accuracy")


def test_quality_target_picks_the_share_that_reaches_it(tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    result = CliRunner().invoke(app, [
        "tune", "--data", str(GSM8K), "--target", "quality=0.95", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["accuracy_at_target"] >= 0.95 * figures["acc_strong"] - 1e-9
    assert load_thresholds(out).calibration["strong_share"] == figures["strong_share"]


def test_bad_csv_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,weak,strong\nhello,True,perhaps\n")
    result = CliRunner().invoke(app, ["tune", "--data", str(bad), "--out", str(tmp_path / "t")])
    assert result.exit_code != 0
    assert "bad.csv:2: column 'strong' must be True or False" in result.output
