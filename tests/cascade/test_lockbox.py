"""The lockbox stays locked: no lockbox subject or prompt in training, selection or tuning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cascade.classifiers import default_artifact_path, shipped_artifact_path
from cascade.data import Table, read_contaminated, read_tables
from cascade.lockbox import LOCKBOX_PATH, Lockbox, choose_subjects, dedupe, normalise, split
from cascade.thresholds import load_thresholds
from cascade.training import Artifact

DATA = Path(__file__).resolve().parents[2] / "data" / "routellm"


@pytest.fixture(scope="module")
def parts():  # type: ignore[no-untyped-def]
    excluded = [p for f in sorted(DATA.glob("*contaminated_prompts.jsonl"))
                for p in read_contaminated(f)]
    return split(read_tables(DATA, exclude=excluded), Lockbox.load())


def test_lockbox_is_the_seeded_draw_written_down() -> None:
    box = Lockbox.load()
    subjects = [p.stem.removeprefix("mmlu_") for p in (DATA / "mmlu").glob("*.csv")]
    assert box.k >= 10
    assert set(box.subjects) <= set(subjects)
    assert list(box.subjects) == choose_subjects(subjects, box.k, box.seed)


def test_no_lockbox_subject_or_prompt_in_development_data(parts) -> None:  # type: ignore[no-untyped-def]
    box = Lockbox.load()
    assert not set(parts.development.groups) & set(box.subjects)
    assert set(parts.lockbox.groups) == set(box.subjects)
    boxed = {normalise(p) for p in parts.lockbox.prompts}
    assert not boxed & {normalise(p) for p in parts.development.prompts}


def test_no_prompt_in_two_groups(parts) -> None:  # type: ignore[no-untyped-def]
    both = [*parts.development.prompts, *parts.lockbox.prompts]
    assert len({normalise(p) for p in both}) == len(both)
    assert parts.dropped >= 78  # the cross-subject duplicates, and repeats within a subject


@pytest.mark.parametrize("path", [shipped_artifact_path(), default_artifact_path()])
def test_shipped_artifacts_never_saw_the_lockbox(parts, path: Path) -> None:  # type: ignore[no-untyped-def]
    artifact = Artifact.load(path)
    box = Lockbox.load()
    assert "groups" in artifact.metadata
    assert not set(artifact.metadata["groups"]) & set(box.subjects)
    assert artifact.overlap(parts.lockbox.prompts) == 0.0
    # Trained on exactly the development data: every development prompt was seen.
    assert artifact.overlap(parts.development.prompts) == 1.0
    assert artifact.metadata["n"] == len(parts.development)


def test_shipped_thresholds_were_tuned_on_development_oof_scores_only(parts) -> None:  # type: ignore[no-untyped-def]
    calibration = load_thresholds().calibration
    dev = parts.development
    assert calibration["n"] == sum(g != "gsm8k_responses" for g in dev.groups)
    assert re.search(r"oof[^/]*/choice\.csv$", calibration["data"])
    assert "score" in str(calibration["scores"])


def test_a_prompt_shared_with_the_lockbox_stays_only_in_the_lockbox() -> None:
    table = Table(prompts=["q  one", "q one", "q two", "q two", "q three"],
                  weak=np.zeros(5, bool), strong=np.ones(5, bool),
                  groups=["astronomy", "anatomy", "astronomy", "nutrition", "nutrition"])
    box = Lockbox(seed=0, k=1, subjects=("anatomy",))
    parts = split(table, box)
    assert parts.lockbox.groups == ["anatomy"]
    assert parts.development.prompts == ["q two", "q three"]
    assert parts.development.groups == ["astronomy", "nutrition"]
    assert parts.dropped == 2
    assert len(dedupe(table)) == 3


def test_malformed_lockbox_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "lockbox.json"
    bad.write_text(json.dumps({"seed": 1, "k": 3, "subjects": ["a", "a", "b"]}))
    with pytest.raises(ValueError, match="3 distinct subjects"):
        Lockbox.load(bad)
    assert json.loads(LOCKBOX_PATH.read_text())["seed"] == Lockbox.load().seed
