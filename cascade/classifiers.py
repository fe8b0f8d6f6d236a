"""Difficulty classifiers: `score(prompts)` -> how likely the cheap tier is not enough.

Every classifier only computes a score in [0, 1]; what to do with it is the
policy's business (`cascade.policy`). Classifiers are made by name from
`CLASSIFIERS`, and heavy imports (torch, sentence-transformers, scikit-learn)
happen inside the factories.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from cascade.training import Artifact
    from core.embedder import Embedder


@runtime_checkable
class DifficultyClassifier(Protocol):
    """Scores prompts; higher means the cheap tier is less likely to be enough."""

    name: str
    version: str

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """One float32 score in [0, 1] per prompt."""
        ...


class LengthClassifier:
    """Baseline: longer prompts are harder. A logistic curve of log character count."""

    name = "length"
    version = "1"

    def __init__(self, midpoint_chars: float = 300.0) -> None:
        self.midpoint = math.log1p(midpoint_chars)

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """sigmoid(log1p(len) - log1p(midpoint)): 0.5 at `midpoint_chars` characters."""
        x = np.log1p(np.asarray([len(p) for p in prompts], dtype=np.float64)) - self.midpoint
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


class TrainedClassifier:
    """A trained classifier: one trained head per question format (`cascade.designs`).

    `minilm-features` (the boosted heads) and `length-backbone` (the shipped
    default, `cascade.backbone`) are both this class over their artifacts;
    whether a head reads MiniLM components is the artifact's business, and
    prompts whose head does not are never embedded.

    Its score is (1 + expected gain) / 2, where the gain is +1 when only the
    strong tier answers correctly, -1 when only the weak one does and 0
    otherwise: 0.5 means no expected gain from the strong tier.
    """

    name = "minilm-features"

    def __init__(self, artifact: Artifact, embedder: Embedder | None = None,
                 name: str = "minilm-features") -> None:
        self.name = name
        self.artifact = artifact
        self.version: str = artifact.version
        if artifact.uses_embedding and embedder is None:
            from core.embedder import Embedder

            embedder = Embedder()
        self.embedder = embedder

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """Scores of `prompts`, embedding only those whose head reads the embedding."""
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        encode = self.embedder.encode if self.embedder is not None else None
        return self.artifact.predict(prompts, encode)

    def score_embedded(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        """Scores from prompts and their embeddings (already computed by the caller)."""
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        return self.artifact.predict(prompts, embeddings)


SHIPPED = "length-backbone"
"""The registry name the classifier service and the packaged thresholds use by default:
prompt length plus a shrunk correction (issue 22: the boosted `minilm-features` routes
worse than length alone on subjects it never saw)."""


def default_artifact_path() -> Path:
    """The boosted `minilm-features` artifact shipped with the package."""
    return Path(__file__).parent / "artifacts" / "difficulty.joblib"


def shipped_artifact_path() -> Path:
    """The artifact of the shipped default router (`SHIPPED`)."""
    return backbone_artifact_path()


def _make_trained(
    artifact: str | Path | None = None, embedder: Embedder | None = None, **_: Any
) -> TrainedClassifier:
    from cascade.training import Artifact

    return TrainedClassifier(Artifact.load(artifact or default_artifact_path()), embedder)


def backbone_artifact_path() -> Path:
    """The length-backbone router shipped with the package (`cascade.backbone`)."""
    return Path(__file__).parent / "artifacts" / "backbone.joblib"


def _make_backbone(
    artifact: str | Path | None = None, embedder: Embedder | None = None, **_: Any
) -> TrainedClassifier:
    """Prompt length's rank plus a correction shrunk out of domain (issue 22)."""
    from cascade.backbone import Backbone
    from cascade.training import Artifact

    path = artifact or backbone_artifact_path()
    loaded = Artifact.load(path)
    if not all(isinstance(h, Backbone) for h in loaded.heads.values()):
        raise ValueError(f"{path}: not a length-backbone artifact; "
                         f"run `cmesh cascade train --router backbone`")
    return TrainedClassifier(loaded, embedder, name="length-backbone")


def _make_length(**_: Any) -> LengthClassifier:
    return LengthClassifier()


CLASSIFIERS: dict[str, Callable[..., DifficultyClassifier]] = {
    "minilm-features": _make_trained,
    "length": _make_length,
    "length-backbone": _make_backbone,
}
"""Registry: name -> factory(artifact=None, embedder=None)."""


def make_classifier(name: str, **kwargs: Any) -> DifficultyClassifier:
    """Build the classifier registered as `name`."""
    try:
        factory = CLASSIFIERS[name]
    except KeyError:
        raise ValueError(f"classifier: unknown {name!r}; known: {sorted(CLASSIFIERS)}") from None
    return factory(**kwargs)


def with_context(prompt: str, earlier_user_turns: Sequence[str], keep: int = 1) -> str:
    """The text to score: the last `keep` earlier user turns, then the prompt.

    A follow-up ("and for n = 5?") is only as hard as the question it follows.
    """
    turns = [t for t in earlier_user_turns if t.strip()][-keep:] if keep > 0 else []
    return "\n".join([*turns, prompt])
