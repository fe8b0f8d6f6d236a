"""Prefill statistics as routing features offline: sampling, the hashed table, the yardstick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cascade.data import Table
from cascade.designs import COLUMNS, DESIGNS
from cascade.features import FEATURE_NAMES
from cascade.lockbox import Lockbox
from cascade.prefill import (
    PrefillTable,
    inputs_hash,
    prefill_head,
    prefill_yardstick,
    sample,
)
from core.prefill import FEATURE_NAMES as PREFILL_NAMES


def table(groups: int = 12, per: int = 40, seed: int = 0) -> tuple[Table, np.ndarray]:
    """MMLU-like rows where the strong tier's gain follows the first prefill statistic only,
    and prompt length says nothing; returns the table and its statistics."""
    rng = np.random.default_rng(seed)
    n = groups * per
    stats = rng.normal(size=(n, len(PREFILL_NAMES)))
    hard = stats[:, 0] < -0.3
    words = rng.integers(5, 60, size=n)
    prompts = [f"Q{i}: " + "word " * int(w) + "\nA. a\nB. b\nC. c\nD. d\nAnswer:"
               for i, w in enumerate(words)]
    strong = np.ones(n, dtype=bool)
    weak = ~hard | (rng.random(n) < 0.1)
    groups_ = [f"subject{i // per:02d}" for i in range(n)]
    return Table(prompts, weak, strong, groups_), stats


def test_sample_is_seeded_per_subject_and_refuses_the_lockbox() -> None:
    t, _ = table(groups=3, per=10)
    t.groups[-10:] = ["gsm8k_responses"] * 10
    rows = sample(t, per_subject=4, gsm8k=6, seed=1)
    groups = np.asarray(t.groups)[rows]
    assert [int((groups == g).sum()) for g in ("subject00", "subject01")] == [4, 4]
    assert int((groups == "gsm8k_responses").sum()) == 6
    assert rows.tolist() == sample(t, 4, 6, seed=1).tolist()
    assert rows.tolist() != sample(t, 4, 6, seed=2).tolist()
    with pytest.raises(ValueError, match="lockbox"):
        sample(t, 4, 6, 1, Lockbox(0, 1, ("subject01",)))


def test_inputs_hash_changes_with_every_input() -> None:
    base = inputs_hash(["a", "b"], "m1", True, 20)
    assert base == inputs_hash(["a", "b"], "m1", True, 20)
    assert len({base, inputs_hash(["a", "c"], "m1", True, 20),
                inputs_hash(["a", "b"], "m2", True, 20), inputs_hash(["a", "b"], "m1", False, 20),
                inputs_hash(["a", "b"], "m1", True, 5)}) == 5


def test_table_round_trips_and_finds_rows_by_prompt(tmp_path) -> None:
    from cascade.training import prompt_hashes

    prompts = ["first prompt", "second  prompt", "third"]
    feats = np.arange(18, dtype=np.float32).reshape(3, 6)
    PrefillTable(prompt_hashes(prompts), feats, {"inputs": "x"}).save(tmp_path / "s.npz")
    back = PrefillTable.load(tmp_path / "s.npz")
    assert back.meta == {"inputs": "x"}
    assert back.rows_for(["third", "second prompt"]).tolist() == [feats[2].tolist(),
                                                                 feats[1].tolist()]
    with pytest.raises(KeyError, match="1 of 1"):
        back.rows_for(["unknown"])


def test_prefill_columns_follow_the_form_features() -> None:
    t, stats = table(groups=2, per=5)
    data = prefill_head(t, np.arange(len(t)), stats, by_group=True)
    assert data.feats.shape == (len(t), len(FEATURE_NAMES) + len(PREFILL_NAMES))
    assert np.allclose(data.feats[:, len(FEATURE_NAMES):], stats)
    assert COLUMNS[len(FEATURE_NAMES)] == "prefill_mean_logprob"
    assert DESIGNS["prefill-ridge"].columns().tolist() == list(
        range(len(FEATURE_NAMES), len(COLUMNS)))


def test_yardstick_finds_a_signal_that_only_the_prefill_statistics_carry() -> None:
    t, stats = table()
    data = prefill_head(t, np.arange(len(t)), stats, by_group=True)
    report = prefill_yardstick(data, draws=6, held_out=3, inner=3)
    routers = report["routers"]
    length = routers["length"]["apgr"]["mean"]
    assert routers["prefill-ridge"]["apgr"]["mean"] > length + 0.15
    assert routers["backbone-prefill"]["apgr"]["mean"] > length + 0.1
    assert routers["backbone-prefill"]["apgr_minus_length"]["share_at_least_length"] == 1.0
    assert routers["backbone"]["apgr"]["mean"] < routers["backbone-prefill"]["apgr"]["mean"]
    assert report["rows"] == len(t)
    paired = report["paired"]["backbone-prefill - backbone"]
    assert paired["mean"] == pytest.approx(routers["backbone-prefill"]["apgr"]["mean"]
                                           - routers["backbone"]["apgr"]["mean"])
    assert paired["share_positive"] > 0.5


ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "routellm"
SHIPPED = ROOT / "cascade" / "artifacts" / "prefill_stats.npz"


def _development() -> tuple[Table, Table]:
    from cascade.data import read_contaminated, read_tables
    from cascade.lockbox import split

    excluded = [p for f in sorted(DATA.glob("*contaminated_prompts.jsonl"))
                for p in read_contaminated(f)]
    parts = split(read_tables(DATA, exclude=excluded), Lockbox.load())
    return parts.development, parts.lockbox


def test_shipped_statistics_are_the_seeded_development_sample_and_never_the_lockbox() -> None:
    from cascade.training import prompt_hashes

    shipped = PrefillTable.load(SHIPPED)
    meta = shipped.meta
    dev, box = _development()
    rows = sample(dev, meta["per_subject"], meta["gsm8k"], meta["seed"], Lockbox.load())
    prompts = [dev.prompts[i] for i in rows]
    assert shipped.keys.tolist() == prompt_hashes(prompts).tolist()
    assert not set(shipped.keys.tolist()) & set(prompt_hashes(box.prompts).tolist())
    assert meta["inputs"] == inputs_hash(prompts, meta["model_digest"], meta["chat"],
                                         meta["top"])
    assert shipped.features.shape == (len(rows), len(PREFILL_NAMES))
    assert np.isfinite(shipped.features).all()


@pytest.mark.slow
def test_prefill_evaluate_scores_every_router_on_the_sampled_rows() -> None:
    from typer.testing import CliRunner

    from cmesh.cli import app

    result = CliRunner().invoke(app, ["cascade", "prefill-evaluate", "--data", str(DATA),
                                      "--stats", str(SHIPPED), "--draws", "2",
                                      "--no-embeddings", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rows"] == len(PrefillTable.load(SHIPPED).keys)
    assert report["mmlu"]["draws"] == report["gsm8k"]["draws"] == 2
    for head in ("mmlu", "gsm8k"):
        assert {"length", "random", "backbone", "backbone-prefill"} <= set(
            report[head]["routers"])
        assert report[head]["paired"]
