"""The small tier's prefill statistics as routing features, offline (issue 22, build 4).

`sample` draws a seeded subsample of the development rows (so many per MMLU
subject, so many GSM8K prompts); the statistics of each (`core.prefill`,
computed by the backend engine: `cmesh cascade prefill-stats`) are stored
once in a compact npz whose `inputs` hash names everything they depend on
(the sampled prompts, the model's weights, the template mode, `top`). A
rerun with the same inputs reuses the file; a partial file is resumed.

`prefill_yardstick` then runs issue 22's yardstick on the sampled rows only,
where every router compared sees the same rows: length, random, the length
backbone as shipped (form corrections), the backbone whose corrections may
also use the prefill statistics, and ridge heads on the statistics alone or
beside the form features. The lockbox is never sampled: callers pass the
development table only, and `sample` refuses a lockbox subject.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.backbone import CHOICE_CORRECTIONS, OPEN_CORRECTIONS, candidates
from cascade.data import Table
from cascade.designs import DESIGNS
from cascade.evaluation import head_data
from cascade.lockbox import GSM8K_GROUP, Lockbox
from cascade.metrics import apgr
from cascade.selection import HeadData, Progress
from cascade.training import prompt_hashes
from cascade.yardstick import (
    Procedure,
    backbone_procedure,
    design_procedure,
    prompt_draws,
    run_yardstick,
    subject_draws,
)
from core.prefill import FEATURE_NAMES as PREFILL_NAMES

SCHEMA = 1
CHOICE_PREFILL_CORRECTIONS = ("prefill-ridge-within", "form-prefill-ridge-within")
OPEN_PREFILL_CORRECTIONS = ("open-prefill-ridge-100", "open-form-prefill-ridge-100")
CHOICE_FIXED = ("prefill-ridge", "prefill-ridge-within", "form-prefill-ridge-within",
                "form-ridge-within")
OPEN_FIXED = ("open-prefill-ridge-100", "open-form-prefill-ridge-100", "open-form-ridge-100")
PAIRS = (("backbone-prefill", "backbone"), ("form-prefill-ridge-within", "form-ridge-within"),
         ("open-form-prefill-ridge-100", "open-form-ridge-100"))
"""(with the statistics, without them): each pair's paired APGR difference is reported."""


def sample(table: Table, per_subject: int, gsm8k: int, seed: int,
           lockbox: Lockbox | None = None) -> np.ndarray:
    """Sorted row indices: `per_subject` random rows of each MMLU subject (all of a smaller
    one) and `gsm8k` random GSM8K rows, drawn with one seeded generator in subject order."""
    groups = np.asarray(table.groups)
    box = set(lockbox.subjects if lockbox else ()) & set(groups.tolist())
    if box:
        raise ValueError(f"lockbox subjects in the table to sample: {sorted(box)}")
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for name in sorted(set(groups.tolist())):
        rows = np.nonzero(groups == name)[0]
        k = gsm8k if name == GSM8K_GROUP else per_subject
        picked.append(rng.choice(rows, size=min(k, len(rows)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def inputs_hash(prompts: Sequence[str], model_digest: str, chat: bool, top: int) -> str:
    """What the statistics depend on, as 16 hex digits."""
    h = hashlib.sha256()
    h.update(json.dumps({"schema": SCHEMA, "model": model_digest, "chat": chat, "top": top,
                         "features": PREFILL_NAMES}).encode())
    h.update(prompt_hashes(prompts).tobytes())
    return h.hexdigest()[:16]


def model_digest(folder: str | Path) -> str:
    """sha256 (16 hex digits) of a model folder's config and weight files."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*")):
        if path.suffix in (".json", ".safetensors") and path.is_file():
            h.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


@dataclass
class PrefillTable:
    """Statistics of some prompts (rows keyed by prompt hash), and what they depend on."""

    keys: np.ndarray
    features: np.ndarray
    """float32, one row per key, columns `core.prefill.FEATURE_NAMES`."""
    meta: dict[str, Any]

    def save(self, path: str | Path) -> None:
        """Write the npz (atomically: a partial write never replaces a good file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, keys=self.keys.astype(np.uint64),
                            features=self.features.astype(np.float32),
                            meta=np.asarray(json.dumps(self.meta, sort_keys=True)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> PrefillTable:
        with np.load(Path(path)) as stored:
            return cls(stored["keys"], stored["features"], json.loads(str(stored["meta"])))

    def rows_for(self, prompts: Sequence[str]) -> np.ndarray:
        """The feature rows of `prompts` (each must be in the table)."""
        at = {int(k): i for i, k in enumerate(self.keys.tolist())}
        keys = prompt_hashes(prompts).tolist()
        missing = sum(int(k) not in at for k in keys)
        if missing:
            raise KeyError(f"{missing} of {len(keys)} prompts have no prefill statistics")
        return self.features[[at[int(k)] for k in keys]]


def prefill_head(table: Table, rows: np.ndarray, stats: np.ndarray, by_group: bool,
                 embeddings: np.ndarray | None = None) -> HeadData:
    """One head's data for `rows` of `table`: the form features, then the prefill
    statistics (`stats`, row-aligned with `rows`) as further columns."""
    data = head_data(table, embeddings, rows, by_group)
    data.feats = np.hstack([data.feats, np.asarray(stats, dtype=np.float64)])
    return data


def prefill_yardstick(data: HeadData, draws: int = 100, held_out: int = 10,
                      share: float = 0.2, inner: int = 4, seed: int = 0,
                      progress: Progress = lambda _: None) -> dict[str, Any]:
    """The yardstick on these rows: length, random, the backbone as shipped, the backbone
    that may use the prefill statistics, and fixed ridge heads with and without them."""
    by_group = data.by_group
    splits = (subject_draws(data.groups, held_out, draws, seed) if by_group
              else prompt_draws(len(data), share, draws, seed))
    base = CHOICE_CORRECTIONS if by_group else OPEN_CORRECTIONS
    extra = CHOICE_PREFILL_CORRECTIONS if by_group else OPEN_PREFILL_CORRECTIONS
    fixed: Mapping[str, Any] = {n: design_procedure(DESIGNS[n])
                                for n in (CHOICE_FIXED if by_group else OPEN_FIXED)}
    procedures = {"backbone": backbone_procedure(candidates(base), inner),
                  "backbone-prefill": backbone_procedure(candidates((*base, *extra)), inner),
                  **fixed}
    per_draw: dict[str, list[float]] = {n: [] for n in procedures}
    report = run_yardstick(data, {n: _recording(p, per_draw[n]) for n, p in procedures.items()},
                           splits, seed, progress)
    report["paired"] = {}
    for with_, without in PAIRS:
        if with_ in per_draw and without in per_draw:
            diff = np.asarray(per_draw[with_]) - np.asarray(per_draw[without])
            report["paired"][f"{with_} - {without}"] = {
                "mean": float(diff.mean()), "std": float(diff.std(ddof=1)),
                "share_positive": float(np.mean(diff > 0))}
    report["held_out"] = (f"{held_out} random subjects per draw" if by_group
                          else f"{share:.0%} of prompts per draw")
    report["rows"] = len(data)
    report["embeddings"] = data.embeddings is not None
    return report


def _recording(procedure: Procedure, into: list[float]) -> Procedure:
    """`procedure`, appending its held-out APGR of each draw to `into` (for paired figures)."""

    def run(data: HeadData, train: np.ndarray, test: np.ndarray,
            seed: int) -> tuple[np.ndarray, str]:
        scores, what = procedure(data, train, test, seed)
        into.append(apgr(scores, data.weak[test], data.strong[test]))
        return scores, what

    return run
