"""`cmesh cache eval`: the cache as configured, and static thresholds, on one pair file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cache.core import CacheConfig
from cache.evaluate import STATIC_THRESHOLDS, collect, figures
from cache.pairs import file_digest, load_pairs, split
from cache.training import cached_encoder
from cache.verifier import FeatureVerifier
from core.embedder import Embedder


def run_eval(path: Path, delta: float, limit: int = 0, verifier_dir: Path | None = None,
             embeddings: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Figures for `path` at `delta`: top-level keys for the cache, `static_*` for baselines."""
    verifier = FeatureVerifier.load(verifier_dir)
    pairs = load_pairs(path)
    held_out = verifier.meta.get("data", {}).get("sha256") == file_digest(path)
    if held_out:
        pairs = split(pairs, "eval")
    if limit:
        pairs = pairs[:limit]
    embedder = Embedder()
    bound = verifier.bound(delta)
    encode = cached_encoder(lambda t: embedder.encode(t, batch_size=128), embeddings)
    out = collect(pairs, encode, verifier, CacheConfig())
    result: dict[str, Any] = figures(out.prob, out.prob_right, bound.threshold, out.n_positive)
    strict = figures(out.prob, out.prob_strict, bound.threshold, out.n_positive)
    result |= {"strict_wrong_hits": strict["wrong_hits"],
               "strict_wrong_share": strict["wrong_share"], "delta": delta,
               "threshold": bound.threshold, "held_out_part_only": held_out,
               "expected_wrong_share": bound.expected_wrong_share,
               "expected_hit_rate": bound.expected_hit_rate}
    for s in STATIC_THRESHOLDS:
        fig = figures(out.top_sim, out.top_right, s, out.n_positive)
        for key in ("hits", "wrong_hits", "wrong_share", "recall"):
            result[f"static_{s:.2f}_{key}"] = fig[key]
    title = f"cache eval: {path.name} ({len(pairs)} pairs{', held-out part' if held_out else ''})"
    return title, result
