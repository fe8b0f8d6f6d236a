"""Training and honest evaluation of the difficulty classifier.

The model is a gradient-boosted regressor of the gain of the strong tier
(strong correct - weak correct, in {-1, 0, 1}) from the prompt's surface
features (`cascade.features`) and, optionally, the leading principal
components of its MiniLM embedding. Ranking by expected gain is what APGR
rewards: a prompt both tiers get wrong is no reason to pay for the strong one.

Evaluation never scores a prompt with a model that saw its group: MMLU is
cross-validated by subject (GroupKFold), GSM8K by held-out prompts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cascade.data import Table
from cascade.features import FEATURE_NAMES, feature_matrix
from cascade.metrics import apgr


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the classifier."""

    choice_components: int = 16
    open_components: int = 16
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    open_alpha: float = 100.0
    seed: int = 0


def is_choice(features: np.ndarray) -> np.ndarray:
    """Rows that are multiple-choice questions (two or more lettered options)."""
    return features[:, FEATURE_NAMES.index("n_options")] >= 2


@dataclass
class Head:
    """One regressor of the strong tier's gain, on features and projected embeddings."""

    model: Any
    projection: np.ndarray | None = None
    mean: np.ndarray | None = None

    def inputs(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Surface features, then the embedding's leading principal components."""
        if self.projection is None:
            return feats
        if embeddings is None:
            raise ValueError("this classifier needs the prompts' embeddings")
        projected = (np.asarray(embeddings, np.float32) - self.mean) @ self.projection
        return np.hstack([feats, projected.astype(np.float32)])

    def predict(self, feats: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        """Predicted gain per row."""
        return np.asarray(self.model.predict(self.inputs(feats, embeddings)), np.float64)


def _fit_head(model: Any, feats: np.ndarray, embeddings: np.ndarray | None, gain: np.ndarray,
              components: int) -> Head:
    head = Head(model)
    if components > 0:
        if embeddings is None:
            raise ValueError("embedding components > 0 need the prompts' embeddings")
        emb = np.asarray(embeddings, np.float32)
        head.mean = emb.mean(axis=0)
        # Principal directions of this head's training embeddings (deterministic SVD).
        _, _, vt = np.linalg.svd(emb - head.mean, full_matrices=False)
        head.projection = vt[:components].T.astype(np.float32)
    model.fit(head.inputs(feats, embeddings), gain)
    return head


@dataclass
class Artifact:
    """Everything needed to score: one head per question format, and metadata.

    `heads["choice"]` (gradient boosting) scores multiple-choice prompts,
    `heads["open"]` (ridge regression) the rest; a format without a head
    uses the other one.
    """

    heads: dict[str, Head]
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
        return any(h.projection is not None for h in self.heads.values())

    def predict(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        """Scores in [0, 1]: (1 + predicted gain) / 2."""
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
                emb = np.asarray(embeddings)[rows] if embeddings is not None else None
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


def fit(table: Table, embeddings: np.ndarray | None, config: TrainConfig) -> Artifact:
    """Fit the classifier on `table` (embeddings row-aligned, or None for features only)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = feature_matrix(table.prompts)
    choice = is_choice(feats)
    gain = table.strong.astype(np.float64) - table.weak.astype(np.float64)
    artifact = Artifact(heads={}, feature_names=list(FEATURE_NAMES), config=asdict(config))
    for name, rows in (("choice", choice), ("open", ~choice)):
        if not rows.any():
            continue
        model: Any = HistGradientBoostingRegressor(
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=False,
            random_state=config.seed,
        ) if name == "choice" else make_pipeline(StandardScaler(), Ridge(alpha=config.open_alpha))
        emb = np.asarray(embeddings)[rows] if embeddings is not None else None
        k = config.choice_components if name == "choice" else config.open_components
        artifact.heads[name] = _fit_head(model, feats[rows], emb, gain[rows], k)
    digest = hashlib.sha256("\n".join(table.prompts).encode()).hexdigest()[:12]
    artifact.metadata = {"n": len(table), "n_choice": int(choice.sum()),
                         "data_sha256_12": digest}
    artifact.version = digest[:8]
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


@dataclass(frozen=True)
class Evaluation:
    """Out-of-group APGR figures of one configuration, and the held-out scores."""

    mmlu_apgr: float
    gsm8k_apgr: float
    mmlu_n: int
    gsm8k_n: int
    folds: int
    scores: np.ndarray = field(repr=False)
    """Every row's score from a model that never saw it (its subject, for MMLU)."""


def cross_validate(
    table: Table,
    embeddings: np.ndarray | None,
    config: TrainConfig,
    folds: int = 5,
    gsm8k_group: str = "gsm8k_responses",
    progress: Callable[[str], None] = lambda _: None,
) -> Evaluation:
    """MMLU APGR by subject-grouped CV, and GSM8K APGR on held-out GSM8K prompts.

    MMLU folds train on the other subjects (GSM8K not included); GSM8K folds
    train on all of MMLU plus the other GSM8K folds. Out-of-fold scores are
    pooled and APGR is computed once per benchmark.
    """
    from sklearn.model_selection import GroupKFold, KFold

    groups = np.asarray(table.groups)
    is_gsm = groups == gsm8k_group
    mmlu_idx = np.nonzero(~is_gsm)[0]
    gsm_idx = np.nonzero(is_gsm)[0]
    if mmlu_idx.size == 0 or gsm_idx.size == 0:
        raise ValueError(f"need MMLU rows and GSM8K rows (group {gsm8k_group!r})")

    def run(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(table), bool)
        mask[train] = True
        emb = embeddings[mask] if embeddings is not None else None
        artifact = fit(table.subset(mask), emb, config)
        test_emb = embeddings[test] if embeddings is not None else None
        return artifact.predict([table.prompts[i] for i in test], test_emb)

    mmlu_scores = np.zeros(mmlu_idx.size)
    splitter = GroupKFold(n_splits=folds)
    for k, (tr, te) in enumerate(splitter.split(mmlu_idx, groups=groups[mmlu_idx])):
        progress(f"mmlu fold {k + 1}/{folds}")
        mmlu_scores[te] = run(mmlu_idx[tr], mmlu_idx[te])
    gsm_scores = np.zeros(gsm_idx.size)
    kfold = KFold(n_splits=folds, shuffle=True, random_state=config.seed)
    for k, (tr, te) in enumerate(kfold.split(gsm_idx)):
        progress(f"gsm8k fold {k + 1}/{folds}")
        gsm_scores[te] = run(np.concatenate([mmlu_idx, gsm_idx[tr]]), gsm_idx[te])
    scores = np.zeros(len(table))
    scores[mmlu_idx], scores[gsm_idx] = mmlu_scores, gsm_scores
    return Evaluation(
        mmlu_apgr=apgr(mmlu_scores, table.weak[mmlu_idx], table.strong[mmlu_idx]),
        gsm8k_apgr=apgr(gsm_scores, table.weak[gsm_idx], table.strong[gsm_idx]),
        mmlu_n=int(mmlu_idx.size),
        gsm8k_n=int(gsm_idx.size),
        folds=folds,
        scores=scores,
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
