"""Evaluation and training pairs: loading, and the fixed train/calibration/eval split.

Two formats are read, plain or gzipped JSON: GPTCache's benchmark (a list of
`{"origin", "similar"}`, every pair a true paraphrase) and labelled pairs
(`{"text_a", "text_b", "label"}`).

The split is by a hash of the pair's normalised `text_a`, so it does not
depend on file order, and every pair sharing a `text_a` lands in the same
part: a question the verifier trained on never reappears as a cached entry
in calibration or evaluation. Buckets 0-59 train, 60-74 calibrate, 75-99
evaluate.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Part = Literal["train", "calib", "eval"]
TRAIN_BELOW, CALIB_BELOW = 60, 75


@dataclass(frozen=True)
class Pair:
    """`a` is cached, `b` is asked; `label` 1 means b should be answered by a."""

    a: str
    b: str
    label: int


def load_pairs(path: str | Path) -> list[Pair]:
    """Read either format; GPTCache pairs get label 1."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = json.load(fh)
    if isinstance(rows, dict):
        rows = next(iter(rows.values()))
    pairs = []
    for row in rows:
        if "origin" in row:
            pairs.append(Pair(str(row["origin"]), str(row["similar"]), 1))
        else:
            pairs.append(Pair(str(row["text_a"]), str(row["text_b"]), int(row["label"])))
    return pairs


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes: tells whether a file is the verifier's training file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bucket(text_a: str) -> int:
    """0..99, fixed for a given (normalised) text_a."""
    norm = " ".join(text_a.lower().split())
    return int.from_bytes(hashlib.sha256(norm.encode()).digest()[:4], "big") % 100


def part_of(pair: Pair) -> Part:
    """Which part of the fixed split `pair` belongs to."""
    b = bucket(pair.a)
    return "train" if b < TRAIN_BELOW else "calib" if b < CALIB_BELOW else "eval"


def split(pairs: list[Pair], part: Part) -> list[Pair]:
    """The pairs of one part, in file order."""
    return [p for p in pairs if part_of(p) == part]
