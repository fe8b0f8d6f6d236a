"""`cmesh cascade train/evaluate` and `cmesh tune --scores-column` end to end, on the real data.

Cheap designs (ridge) keep these quick; the figures of the shipped design
come from the same commands with the default `--designs all`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade.classifiers import SHIPPED, make_classifier, shipped_artifact_path
from cascade.data import read_column, read_tables
from cascade.lockbox import Lockbox
from cascade.thresholds import load_thresholds
from cascade.training import Artifact
from cmesh.cli import app

pytestmark = pytest.mark.slow  # trains, evaluates or starts a process: not in --unit

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "routellm"
CHEAP = "length-ridge,form-ridge,open-length-ridge,open-form-ridge-100"


def last_json(output: str) -> dict:  # type: ignore[type-arg]
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("train")
    artifact, oof = out / "difficulty.joblib", out / "oof"
    result = CliRunner().invoke(app, [
        "cascade", "train", "--data", str(DATA), "--designs", CHEAP, "--folds", "3",
        "--out", str(artifact), "--oof-out", str(oof), "--json"])
    assert result.exit_code == 0, result.output
    return artifact, oof, last_json(result.stdout)


def test_train_selects_on_development_data_and_writes_oof_scores(trained) -> None:  # type: ignore[no-untyped-def]
    artifact_path, oof, figures = trained
    assert figures["choice_design"] in ("length-ridge", "form-ridge")
    assert figures["dedup_dropped"] >= 78
    artifact = Artifact.load(artifact_path)
    assert not set(artifact.metadata["groups"]) & set(Lockbox.load().subjects)
    table = read_tables(oof)
    scores = read_column(oof, "score")
    assert len(scores) == len(table) == figures["n"] == artifact.metadata["n"]
    assert np.all((scores >= 0) & (scores <= 1))
    assert set(table.groups) == {"choice", "open"}  # one file per head
    assert len(read_tables(oof / "open.csv")) == 914


def test_tune_on_oof_scores_writes_thresholds_for_the_share(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, oof, _ = trained
    out = tmp_path / "thresholds.json"
    result = CliRunner().invoke(app, [
        "tune", "--data", str(oof / "choice.csv"), "--scores-column", "score",
        "--target", "strong-fraction=0.3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    figures = last_json(result.stdout)
    assert figures["in_training_share"] == 0.0
    tuned = load_thresholds(out)
    scores = read_column(oof / "choice.csv", "score")
    share = float(np.mean(scores >= tuned.route("large")))
    assert share == pytest.approx(0.3, abs=0.01)
    assert "--scores-column score" in tuned.calibration["command"]


def test_evaluate_reports_outer_loop_per_subject_and_the_lockbox(tmp_path: Path) -> None:
    looks = tmp_path / "looks.json"
    args = ["cascade", "evaluate", "--data", str(DATA), "--designs", CHEAP, "--outer", "3",
            "--inner", "2", "--looks", str(looks), "--draws", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    mmlu = report["development"]["mmlu"]
    box = Lockbox.load()
    assert not set(mmlu["per_subject"]) & set(box.subjects)
    for router in ("classifier", "length", "random"):
        assert 0.0 < mmlu["pooled"][router]["apgr"] < 1.0
        assert 0.0 <= mmlu["pooled"][router]["cpt50"] <= 1.0
    assert mmlu["pooled"]["random"]["apgr"] == pytest.approx(0.5)
    assert len(mmlu["chosen_per_outer_fold"]) == 3
    assert set(mmlu["designs_outer_apgr"]) == {"length-ridge", "form-ridge"}
    assert report["development"]["gsm8k"]["pooled"]["classifier"]["n"] == 914
    lock = report["lockbox"]
    assert set(lock["per_subject"]) == set(box.subjects)
    assert lock["artifact"] == Artifact.load(shipped_artifact_path()).version
    assert lock["looks"] == 1
    again = last_json(CliRunner().invoke(app, args).stdout)
    assert again["lockbox"]["looks"] == 2  # same artifact: the first look's entry is kept
    assert len(json.loads(looks.read_text())) == 1
    assert again["headline"]["lockbox_apgr"] == report["headline"]["lockbox_apgr"]


def test_unknown_design_names_the_option() -> None:
    result = CliRunner().invoke(app, ["cascade", "evaluate", "--designs", "nope"])
    assert result.exit_code != 0
    assert "--designs" in result.output and "unknown 'nope'" in result.output


@pytest.mark.xfail(strict=True, reason=(
    "issue 12 must-show not met: the shipped length backbone (7fdafa4a) with its thresholds "
    "sends 14.2 % of lockbox prompts strong for a 30 % target (the boosted 3f33d078: 14.7 %; "
    "lockbox_looks.json); a fixed threshold's share moves about 13 points between draws of 10 "
    "development subjects"))
def test_shipped_thresholds_send_the_target_share_of_lockbox_prompts_strong() -> None:
    """The shipped model (not fold models) with the shipped thresholds, on the lockbox."""
    from cascade.data import read_contaminated
    from cascade.lockbox import split

    excluded = [p for f in sorted(DATA.glob("*contaminated_prompts.jsonl"))
                for p in read_contaminated(f)]
    box = split(read_tables(DATA, exclude=excluded), Lockbox.load()).lockbox
    tuned = load_thresholds()
    model = make_classifier(SHIPPED)
    share = float(np.mean(model.score(box.prompts) >= tuned.route("large")))
    assert abs(share - tuned.calibration["strong_share"]) <= 0.05


def test_evaluate_yardstick_reports_mean_and_spread_beside_length_and_random(
        tmp_path: Path) -> None:
    looks = tmp_path / "looks.json"
    result = CliRunner().invoke(app, [
        "cascade", "evaluate", "--data", str(DATA), "--draws", "4", "--inner", "2",
        "--no-yardstick-embeddings", "--no-nested", "--no-lockbox", "--fixed", "form-ridge",
        "--looks", str(looks), "--json"])
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    assert "lockbox" not in report and not looks.exists()  # --no-lockbox never looks
    mmlu, gsm8k = report["yardstick"]["mmlu"], report["yardstick"]["gsm8k"]
    assert mmlu["draws"] == gsm8k["draws"] == 4
    assert set(mmlu["routers"]) == {"backbone", "length", "random", "form-ridge"}
    assert set(gsm8k["routers"]) == {"backbone", "length", "random"}
    for head in (mmlu, gsm8k):
        routers = head["routers"]
        assert routers["random"]["apgr"]["mean"] == pytest.approx(0.5)
        assert routers["length"]["apgr"]["std"] > 0
        assert 0.0 < routers["backbone"]["apgr"]["mean"] < 1.0
        assert sum(routers["backbone"]["chosen"].values()) == 4
    headline = report["headline"]
    assert headline["mmlu_yardstick_backbone_minus_length"] == pytest.approx(
        headline["mmlu_yardstick_backbone_apgr_mean"]
        - headline["mmlu_yardstick_length_apgr_mean"])
    prefill = report["prefill"]  # the same yardstick on the rows with prefill statistics
    assert prefill["rows"] > 1000
    for name in ("mmlu", "gsm8k"):
        assert prefill[name]["paired"] and prefill[name]["routers"]["length"]["apgr"]["std"] > 0
        assert any(k.startswith(f"{name}_prefill_paired") for k in headline)


def small_routing_data(folder: Path, subjects: int = 8, rows: int = 40,
                       gsm8k_rows: int = 160) -> Path:
    """The first rows of a few non-lockbox MMLU subjects and of GSM8K, as CSV files in the
    project's layout (records copied whole: prompts span lines)."""
    import csv

    lockbox = set(Lockbox.load().subjects)
    (folder / "mmlu").mkdir(parents=True)
    sources = [f for f in sorted((DATA / "mmlu").glob("*.csv"))
               if f.stem.removeprefix("mmlu_") not in lockbox][:subjects]
    sources.append(DATA / "gsm8k_responses.csv")
    for src in sources:
        dest = folder / ("mmlu" if src.parent.name == "mmlu" else "") / src.name
        with src.open(newline="") as fin, dest.open("w", newline="") as fout:
            reader, writer = csv.reader(fin), csv.writer(fout)
            writer.writerow(next(reader))
            for i, record in enumerate(reader):
                if i >= (gsm8k_rows if src.name.startswith("gsm8k") else rows):
                    break
                writer.writerow(record)
    return folder


def test_train_backbone_writes_an_artifact_the_registry_serves(tmp_path: Path) -> None:
    from cascade.backbone import Backbone
    from cascade.classifiers import make_classifier

    out, oof = tmp_path / "backbone.joblib", tmp_path / "oof"
    data = small_routing_data(tmp_path / "data")  # embeds in seconds, no cache needed
    result = CliRunner().invoke(app, [
        "cascade", "train", "--data", str(data), "--router", "backbone", "--folds", "3",
        "--embeddings-cache", str(tmp_path / "embeddings.npz"), "--out", str(out),
        "--oof-out", str(oof), "--json"])
    assert result.exit_code == 0, result.output
    figures = last_json(result.stdout)
    assert figures["router"] == "backbone"
    artifact = Artifact.load(out)
    assert all(isinstance(h, Backbone) for h in artifact.heads.values())
    assert not set(artifact.metadata["groups"]) & set(Lockbox.load().subjects)
    model = make_classifier("length-backbone", artifact=out)
    scores = model.score(["What is 2 + 2?", "A) one\nB) two\nWhich? " * 20])
    assert model.name == "length-backbone" and np.all((scores > 0) & (scores < 1))
    assert len(read_column(oof, "score")) == figures["n"]
