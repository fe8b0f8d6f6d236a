"""Evaluation and training pairs: loading, the fixed split, and the scoring rule.

Two formats are read, plain or gzipped JSON: GPTCache's benchmark (a list of
`{"origin", "similar"}`, every pair a true paraphrase) and labelled pairs
(`{"text_a", "text_b", "label"}`, optionally `"kind"` and `"domain"`).

**Split.** Pairs that share a question text (after `normalise`) are joined,
transitively, into connected components of the pair graph; a component's
part is fixed by a hash of its smallest normalised text. So every question
text lives in exactly one part: a text the verifier trained on never comes
back as a cached entry or a query in calibration or evaluation, and the
split does not depend on file order. Buckets 0-59 train, 60-74 calibrate,
75-99 evaluate (`halves` splits a file with no training part 50/50).

**Scoring.** A hit is right when the returned prompt is the query's own text
(`normalise`: case and whitespace only, every operator, sign, digit and
symbol kept) or lies in the query's duplicate cluster: the connected
components of the file's label-1 pairs. `Scorer` is the one place this is
written; evaluation, calibration and the bench all use it. It shares no
code with the verifier, so a bug in the verifier's own exact-repeat rule
cannot hide itself in the figures.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Sequence
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
    kind: str = ""
    domain: str = ""


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
            pairs.append(Pair(str(row["text_a"]), str(row["text_b"]), int(row["label"]),
                              str(row.get("kind", "")), str(row.get("domain", ""))))
    return pairs


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def normalise(text: str) -> str:
    """Case and whitespace folded; nothing else touched ("2+2" and "2-2" stay apart)."""
    return " ".join(text.casefold().split())


def text_hash(text: str) -> str:
    """Short sha256 of a normalised text (what the artifact ships instead of its texts)."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


class _Components:
    """Union-find over normalised texts."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while x != root:
            parent[x], x = root, parent[x]
        return root

    def join(self, x: str, y: str) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)  # the root is the smallest text


def _bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % 100


def parts(pairs: Sequence[Pair], train_below: int = TRAIN_BELOW,
          calib_below: int = CALIB_BELOW) -> list[Part]:
    """The part of each pair: by a hash of its component's smallest normalised text."""
    comp = _Components()
    for p in pairs:
        comp.join(normalise(p.a), normalise(p.b))
    out: list[Part] = []
    for p in pairs:
        b = _bucket(comp.find(normalise(p.a)))
        out.append("train" if b < train_below else "calib" if b < calib_below else "eval")
    return out


def split(pairs: Sequence[Pair], part: Part) -> list[Pair]:
    """The pairs of one part of the fixed 60/15/25 split, in file order."""
    return [p for p, q in zip(pairs, parts(pairs), strict=True) if q == part]


def halves(pairs: Sequence[Pair], part: Part) -> list[Pair]:
    """A file with no training part (hand-written, mock data): 50 % calib, 50 % eval."""
    return [p for p, q in zip(pairs, parts(pairs, 0, 50), strict=True) if q == part]


def evaluation_part(pairs: Sequence[Pair], has_train: bool) -> list[Pair]:
    """What `cmesh cache eval` scores: the eval part of the split the file uses."""
    return split(pairs, "eval") if has_train else halves(pairs, "eval")


class Scorer:
    """Whether a hit is right: the query's own text or its duplicate cluster."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self._clusters = _Components()
        for p in pairs:
            if p.label == 1:
                self._clusters.join(normalise(p.a), normalise(p.b))

    def right(self, query: str, returned: str) -> bool:
        """A hit returning `returned` for `query` serves the right answer."""
        q, r = normalise(query), normalise(returned)
        return q == r or self._clusters.find(q) == self._clusters.find(r)


def overlap(pairs: Sequence[Pair], hashes: set[str]) -> dict[str, float]:
    """How many of the file's texts (and pairs) the verifier trained on (`text_hash`)."""
    texts = {normalise(t) for p in pairs for t in (p.a, p.b)}
    seen = {t for t in texts if text_hash(t) in hashes}
    pairs_seen = sum(1 for p in pairs if text_hash(p.a) in hashes or text_hash(p.b) in hashes)
    return {"texts": len(texts), "texts_in_training": len(seen),
            "pairs_touching_training": pairs_seen,
            "share_pairs_touching_training": pairs_seen / max(len(pairs), 1)}
