"""Fitting the difficulty classifier, and the artifact that scores prompts.

Each question format gets one head (`cascade.designs`): a regressor of the
strong tier's gain (strong correct - weak correct, in {-1, 0, 1}) from the
prompt's form features and, where a design asks, the leading principal
components of its MiniLM embedding. Ranking by expected gain is what APGR
rewards: a prompt both tiers get wrong is no reason to pay for the strong one.

Which design each head uses is chosen by `cascade.selection` (nested
cross-validation by subject); this module only fits and scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cascade.data import Table
from cascade.designs import Design, get_design, subject_weights, within_group
from cascade.features import FEATURE_NAMES, feature_matrix


def is_choice(features: np.ndarray) -> np.ndarray:
    """Rows that are multiple-choice questions (two or more lettered options)."""
    return features[:, FEATURE_NAMES.index("n_options")] >= 2


class HeadModel(Protocol):
    """What an artifact needs of a head: `Head` here, or `cascade.backbone.Backbone`."""

    @property
    def uses_embedding(self) -> bool:
        """Whether scoring needs the prompts' embeddings."""
        ...

    def predict(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Predicted gain per row, in [-1, 1] after clipping."""
        ...


@dataclass
class Head:
    """One fitted regressor of the strong tier's gain (or an ensemble of them)."""

    design: Design
    model: Any = None
    columns: np.ndarray | None = None
    projection: np.ndarray | None = None
    mean: np.ndarray | None = None
    center: float = 0.0
    scale: float = 1.0
    """Mean and std of its training predictions: ensembles average standardised ones."""
    members: list[Head] = field(default_factory=list)

    @property
    def uses_embedding(self) -> bool:
        """Whether this head (or a member) reads embedding components."""
        return self.projection is not None or any(m.uses_embedding for m in self.members)

    def inputs(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """This design's features, then the embedding's leading principal components."""
        x = feats if self.columns is None else feats[:, self.columns]
        if self.projection is None:
            return x
        if embeddings is None or self.mean is None:
            raise ValueError("this classifier needs the prompts' embeddings")
        projected = (np.asarray(embeddings, np.float32) - self.mean) @ self.projection
        return np.hstack([x, projected.astype(np.float32)])

    def predict(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Predicted gain per row (an ensemble: the mean of its members' standardised ones)."""
        if self.members:
            parts = [(m.predict(feats, embeddings) - m.center) / m.scale for m in self.members]
            return self.center + np.mean(parts, axis=0) * self.scale
        x = self.inputs(feats, embeddings)
        linear = self._linear()
        if linear is not None:
            weights, bias = linear
            return x.astype(np.float64) @ weights + bias
        return np.asarray(self.model.predict(x), np.float64)

    def _linear(self) -> tuple[np.ndarray, float] | None:
        """Scaler + ridge folded into one weight vector (None for other models).

        Same predictions as the pipeline without scikit-learn's per-call input
        checks: about 0.3 ms of a one-prompt Score that must stay within 1.2x
        one MiniLM encode.
        """
        cached = self.__dict__.get("_folded")
        if cached is not None or self.design.model != "ridge":
            return cached
        scaler, ridge = self.model[0], self.model[-1]
        weights = np.asarray(ridge.coef_, np.float64) / scaler.scale_
        bias = float(ridge.intercept_ - np.dot(weights, scaler.mean_))
        self.__dict__["_folded"] = (weights, bias)
        return weights, bias


def fit_head(design: Design, feats: np.ndarray, embeddings: np.ndarray | None,
             gain: np.ndarray, groups: np.ndarray,
             member: Callable[[str], Head] | None = None) -> Head:
    """Fit `design` on rows `feats` (embeddings row-aligned) to predict `gain`.

    An ensemble fits its members on the same rows, or takes them from
    `member(name)` (selection passes its cache of heads fitted on these rows).
    """
    if design.model == "ensemble":
        members = [member(n) if member else
                   fit_head(get_design(n), feats, embeddings, gain, groups)
                   for n in design.members]
        return Head(design, members=members, center=float(np.mean([m.center for m in members])),
                    scale=float(np.mean([m.scale for m in members])))
    head = Head(design, design.estimator(), design.columns())
    if design.components > 0:
        if embeddings is None:
            raise ValueError(f"design {design.name!r} needs the prompts' embeddings")
        emb = np.asarray(embeddings, np.float32)
        head.mean = emb.mean(axis=0)
        # Principal directions of this head's training embeddings (deterministic SVD).
        _, _, vt = np.linalg.svd(emb - head.mean, full_matrices=False)
        head.projection = vt[: design.components].T.astype(np.float32)
    weights = subject_weights(groups) if design.reweight else None
    if design.target == "within":
        gain = within_group(gain, groups)
    x = head.inputs(feats, embeddings)
    if design.model == "ridge":
        head.model.fit(x, gain, ridge__sample_weight=weights)
    else:
        head.model.fit(x, gain, sample_weight=weights)
    fitted = head.model.predict(x)
    head.center, head.scale = float(np.mean(fitted)), float(np.std(fitted)) or 1.0
    return head


@dataclass
class Artifact:
    """Everything needed to score: one head per question format, and metadata.

    `heads["choice"]` scores multiple-choice prompts, `heads["open"]` the
    rest (their designs are in `config`); a format without a head uses the
    other one.
    """

    heads: dict[str, HeadModel]
    feature_names: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str = "0"
    train_hashes: np.ndarray | None = None

    def overlap(self, prompts: Sequence[str]) -> float:
        """Share of `prompts` that were in this classifier's training data."""
        if self.train_hashes is None or not prompts:
            return 0.0
        return float(np.mean(np.isin(prompt_hashes(prompts), self.train_hashes)))

    @property
    def uses_embedding(self) -> bool:
        """Whether scoring needs the MiniLM embedding of the prompt."""
        return any(h.uses_embedding for h in self.heads.values())

    def predict(self, prompts: Sequence[str],
                embeddings: np.ndarray | Callable[[Sequence[str]], np.ndarray] | None,
                ) -> np.ndarray:
        """Scores in [0, 1]: (1 + predicted gain) / 2.

        `embeddings` is row-aligned, or an encoder called only on the prompts
        whose head reads embedding components (a features-only head never
        pays for a MiniLM encode).
        """
        if list(self.feature_names) != list(FEATURE_NAMES):
            raise ValueError("artifact was trained with other features; retrain it")
        feats = feature_matrix(prompts)
        choice_head, open_head = self.heads.get("choice"), self.heads.get("open")
        if choice_head is not None and open_head is not None:
            choice = is_choice(feats)
        else:
            choice = np.full(len(prompts), choice_head is not None)
        gain = np.zeros(len(prompts), dtype=np.float64)
        for rows, head in ((choice, choice_head), (~choice, open_head)):
            if rows.any():
                assert head is not None
                emb = None
                if callable(embeddings):
                    if head.uses_embedding:
                        emb = embeddings([p for p, r in zip(prompts, rows, strict=True) if r])
                elif embeddings is not None:
                    emb = np.asarray(embeddings)[rows]
                gain[rows] = head.predict(feats[rows], emb)
        return np.clip((1.0 + gain) / 2.0, 0.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write the artifact with joblib (compressed)."""
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path, compress=3)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Read an artifact written by `save` (a trusted file: joblib unpickles)."""
        import joblib

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no classifier artifact; run `cmesh cascade train` to make one"
            )
        artifact = joblib.load(path)
        if not isinstance(artifact, cls):
            raise ValueError(f"{path}: not a difficulty classifier artifact")
        return artifact


def fit(table: Table, embeddings: np.ndarray | None, choice: Design, open_: Design) -> Artifact:
    """Fit one head per question format on `table` (embeddings row-aligned, or None).

    The choice head learns from multiple-choice rows, the open head from the
    rest; rows are weighted per group (subject) when the design says so.
    """
    feats = feature_matrix(table.prompts)
    rows_choice = is_choice(feats)
    gain = table.strong.astype(np.float64) - table.weak.astype(np.float64)
    groups = np.asarray(table.groups)
    artifact = Artifact(heads={}, feature_names=list(FEATURE_NAMES),
                        config={"choice": choice.as_dict(), "open": open_.as_dict()})
    for name, rows, design in (("choice", rows_choice, choice), ("open", ~rows_choice, open_)):
        if not rows.any():
            continue
        emb = np.asarray(embeddings)[rows] if embeddings is not None else None
        artifact.heads[name] = fit_head(design, feats[rows], emb, gain[rows], groups[rows])
    return stamp(artifact, table, int(rows_choice.sum()))


def stamp(artifact: Artifact, table: Table, n_choice: int) -> Artifact:
    """Set the metadata, version and training hashes of an artifact fitted on `table`."""
    digest = hashlib.sha256("\n".join(table.prompts).encode()).hexdigest()[:12]
    artifact.metadata = {"n": len(table), "n_choice": n_choice,
                         "data_sha256_12": digest, "groups": sorted(set(table.groups))}
    # The version names data and designs: another design on the same data is another
    # artifact (and gets its own look at the lockbox).
    recipe = json.dumps(artifact.config, sort_keys=True)
    artifact.version = hashlib.sha256(f"{digest}\n{recipe}".encode()).hexdigest()[:8]
    artifact.train_hashes = np.unique(prompt_hashes(table.prompts))
    return artifact


def prompt_hashes(prompts: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each whitespace-normalised prompt (to spot training overlap)."""
    return np.asarray(
        [
            int.from_bytes(hashlib.blake2b(" ".join(p.split()).encode(), digest_size=8).digest())
            for p in prompts
        ],
        dtype=np.uint64,
    )


def embed_prompts(
    prompts: Sequence[str],
    encode: Callable[[Sequence[str]], np.ndarray],
    cache: str | Path | None = None,
    chunk: int = 512,
    progress: Callable[[str], None] = lambda _: None,
) -> np.ndarray:
    """Embeddings of `prompts`, reusing and extending an optional npz cache keyed by hash."""
    keys = prompt_hashes(prompts)
    known: dict[int, np.ndarray] = {}
    cache_path = Path(cache) if cache else None
    if cache_path is not None and cache_path.is_file():
        with np.load(cache_path) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
    missing = [i for i, k in enumerate(keys.tolist()) if k not in known]
    for start in range(0, len(missing), chunk):
        part = missing[start : start + chunk]
        progress(f"embedding {start + len(part)}/{len(missing)}")
        for i, vector in zip(part, encode([prompts[i] for i in part]), strict=True):
            known[int(keys[i])] = vector
    if cache_path is not None and missing:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_path, keys=np.asarray(list(known), dtype=np.uint64),
                 vectors=np.stack(list(known.values())))
    return np.stack([known[int(k)] for k in keys]).astype(np.float32)
