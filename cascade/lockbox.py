"""The lockbox: MMLU subjects that no design choice ever sees, and the development split.

A figure measured on the data that chose the design measures the choice,
not the generalisation (issue 12: about a dozen designs picked on one
subject split read 0.669 there and 0.558 on unseen subjects). So a fixed,
seeded draw of subjects is set aside in `artifacts/lockbox.json` before
any design is tried; features, hyper-parameters, designs and thresholds
are chosen on the rest ("development"), and only a shipped artifact is
ever scored on the lockbox, once per artifact version
(`artifacts/lockbox_looks.json` records each look).

Prompts are de-duplicated first: 78 MMLU questions appear under two
subjects, and a prompt on both sides of a split leaks its label. A
duplicate that touches the lockbox stays in the lockbox only; one shared
by two development subjects stays with the first subject in sorted order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cascade.data import Table

ARTIFACTS = Path(__file__).parent / "artifacts"
LOCKBOX_PATH = ARTIFACTS / "lockbox.json"
LOOKS_PATH = ARTIFACTS / "lockbox_looks.json"
GSM8K_GROUP = "gsm8k_responses"


def choose_subjects(subjects: Iterable[str], k: int, seed: int) -> list[str]:
    """The seeded draw that made the lockbox: k of the sorted subjects, sorted."""
    return sorted(random.Random(seed).sample(sorted(set(subjects)), k))


@dataclass(frozen=True)
class Lockbox:
    """The held-back subjects and how they were drawn."""

    seed: int
    k: int
    subjects: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path = LOCKBOX_PATH) -> Lockbox:
        """Read the lockbox file (a missing or malformed one is a clear error)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            box = cls(int(raw["seed"]), int(raw["k"]), tuple(raw["subjects"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a lockbox file ({exc})") from exc
        if len(box.subjects) != box.k or len(set(box.subjects)) != box.k:
            raise ValueError(f"{path}: expected {box.k} distinct subjects")
        return box

    def holds(self, groups: Sequence[str]) -> np.ndarray:
        """Boolean mask of rows whose group is a lockbox subject."""
        boxed = set(self.subjects)
        return np.asarray([g in boxed for g in groups], dtype=bool)


def normalise(prompt: str) -> str:
    """Whitespace-normalised prompt: the identity used to find duplicates."""
    return " ".join(prompt.split())


def dedupe(table: Table, lockbox: Lockbox | None = None) -> Table:
    """Each prompt once: lockbox rows win, then the first group in sorted order."""
    boxed = lockbox.holds(table.groups) if lockbox else np.zeros(len(table), bool)
    order = sorted(range(len(table)), key=lambda i: (not boxed[i], table.groups[i], i))
    seen: set[str] = set()
    keep = np.zeros(len(table), dtype=bool)
    for i in order:
        key = normalise(table.prompts[i])
        if key not in seen:
            seen.add(key)
            keep[i] = True
    return table.subset(keep)


@dataclass
class Split:
    """De-duplicated development rows and lockbox rows (disjoint by prompt)."""

    development: Table
    lockbox: Table
    dropped: int
    """Duplicate rows removed before splitting."""


def split(table: Table, lockbox: Lockbox) -> Split:
    """De-duplicate `table`, then separate the lockbox subjects from development."""
    unique = dedupe(table, lockbox)
    boxed = lockbox.holds(unique.groups)
    return Split(unique.subset(~boxed), unique.subset(boxed), len(table) - len(unique))


def record_look(version: str, figures: dict[str, Any], path: str | Path = LOOKS_PATH) -> int:
    """Log one look at the lockbox by artifact `version`; returns that version's look count.

    The log is the audit trail of "once per shipped artifact": a second
    look by the same version finds its first entry and adds no new one.
    """
    path = Path(path)
    looks: list[dict[str, Any]] = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    )
    mine = [entry for entry in looks if entry.get("artifact") == version]
    if not mine:
        looks.append({"artifact": version, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                      **figures})
        path.write_text(json.dumps(looks, indent=2) + "\n", encoding="utf-8")
    return len(mine) + 1
