"""Reproducible training of the verifier (`cmesh cache train-verifier`).

Data: the train part of the fixed split of QQP pairs (`cache.pairs`), each
pair a (cached, asked) example, plus one mined negative per query: the
nearest *other* cached prompt, because at serving time the verifier mostly
judges neighbours that are not the pair's own question. The MLP is trained
with a fixed seed on one thread; a logistic rival-aware stage is fitted on
the train part served as in evaluation; the bounds are calibrated on the calib
part, and scored on the eval part, which neither step touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cache.calibration import derive_bound
from cache.core import CacheConfig
from cache.evaluate import collect, figures
from cache.features import Rarity, pair_features, same_text
from cache.index import VectorIndex
from cache.pairs import Pair, bucket, file_digest, load_pairs, split
from cache.verifier import FeatureVerifier

DELTAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25)
Encode = Callable[[list[str]], np.ndarray]


def cached_encoder(encode: Encode, store: Path | None) -> Encode:
    """Wrap `encode` with an on-disk npz of text -> vector (re-runs skip the model)."""
    table: dict[str, np.ndarray] = {}
    if store is not None and store.is_file():
        with np.load(store, allow_pickle=True) as data:
            table = dict(zip(data["texts"].tolist(), data["vecs"], strict=True))

    def run(texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in table})
        if todo:
            table.update(zip(todo, encode(todo), strict=True))
            if store is not None:
                store.parent.mkdir(parents=True, exist_ok=True)
                np.savez(store, texts=np.array(list(table), dtype=object),
                         vecs=np.stack(list(table.values())))
        return np.stack([table[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    return run


def _examples(pairs: list[Pair], encode: Encode,
              rarity: Rarity) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels: every pair, plus each query against its nearest other prompt."""
    cached = sorted({p.a for p in pairs})
    cvec = encode(cached)
    index = VectorIndex(cvec.shape[1], hnsw_from=10**9, use_gpu=False)
    index.add(np.arange(len(cached)), cvec)
    qvec = encode([p.b for p in pairs])
    a_txt, b_txt, labels = [], [], []
    for pair, found in zip(pairs, index.search_many(qvec, 2), strict=True):
        a_txt.append(pair.a)
        b_txt.append(pair.b)
        labels.append(pair.label)
        other = next((i for i, _ in found if cached[i] != pair.a), None)
        if other is not None and cached[other] != pair.b:
            a_txt.append(cached[other])
            b_txt.append(pair.b)
            labels.append(0)
    a_vec, b_vec = encode(a_txt), encode(b_txt)
    return pair_features(a_txt, a_vec, b_txt, b_vec, rarity), np.array(labels, np.float32)


def _fit_mlp(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, seed: int,
             epochs: int, hidden: tuple[int, ...], rarity: Rarity) -> FeatureVerifier:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / scale)
    yt = torch.from_numpy(y)
    xvt = torch.from_numpy((xv - mean) / scale)
    dims = (x.shape[1], *hidden, 1)
    layers: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers += [torch.nn.ReLU(), torch.nn.Dropout(0.2)]
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    best, best_state, patience = float("inf"), None, 0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(256):
            opt.zero_grad()
            loss_fn(model(xt[idx])[:, 0], yt[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model(xvt)[:, 0], torch.from_numpy(yv)))
        if val < best - 1e-4:
            best, patience = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            patience += 1
            if patience >= 4:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    params: dict[str, np.ndarray] = {
        "n_layers": np.array(len(linears)), "mean": mean, "scale": scale,
        "rarity_words": np.array(list(rarity.table)),
        "rarity_values": np.array(list(rarity.table.values()), np.float32),
        "rarity_unseen": np.array(rarity.unseen)}
    for i, lin in enumerate(linears):
        params[f"w{i}"] = lin.weight.detach().numpy().T.copy()
        params[f"b{i}"] = lin.bias.detach().numpy().copy()
    return FeatureVerifier(params)


def _rival_rows(pairs: list[Pair], encode: Encode, verifier: FeatureVerifier,
                config: CacheConfig) -> tuple[np.ndarray, ...]:
    """Every candidate the cache would show the verifier for `pairs`, served as in
    evaluation: (pair logits, cosines, lookup index, whether a hit on it is right)."""
    cached = sorted({p.a for p in pairs})
    cvec = encode(cached)
    index = VectorIndex(cvec.shape[1], hnsw_from=10**9, use_gpu=False)
    index.add(np.arange(len(cached)), cvec)
    qvec = encode([p.b for p in pairs])
    rows = [(qi, ci, sim) for qi, found in enumerate(index.search_many(qvec, config.top_k))
            for ci, sim in found if sim >= config.similarity_floor]
    groups = np.array([r[0] for r in rows])
    logits = verifier.pair_logits([pairs[q].b for q in groups], qvec[groups],
                                  [cached[c] for _, c, _ in rows], cvec[[c for _, c, _ in rows]])
    right = np.array([(pairs[q].label == 1 and cached[c] == pairs[q].a)
                      or same_text(cached[c], pairs[q].b)
                      for q, c, _ in rows])
    return logits, np.array([r[2] for r in rows]), groups, right


def _fit_context(pairs: list[Pair], encode: Encode, verifier: FeatureVerifier,
                 config: CacheConfig) -> np.ndarray:
    """The logistic second stage, fitted on the training part served as in evaluation."""
    from sklearn.linear_model import LogisticRegression

    from cache.verifier import context_features

    logits, sims, groups, right = _rival_rows(pairs, encode, verifier, config)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(
        context_features(logits, sims, groups), right.astype(int))
    return np.append(lr.coef_[0], lr.intercept_[0])


def train(pairs_path: Path, out_dir: Path, encode: Encode, seed: int = 0, epochs: int = 40,
          hidden: tuple[int, ...] = (256, 64), confidence: float = 0.9,
          config: CacheConfig | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, calibrate and evaluate a verifier; write it to `out_dir`; return its metadata."""
    t0 = time.time()
    config = config or CacheConfig()
    pairs = load_pairs(pairs_path)
    train_all = split(pairs, "train")
    fit = [p for p in train_all if bucket(p.a) < 54]
    val = [p for p in train_all if bucket(p.a) >= 54]
    log(f"pairs: {len(pairs)}; train {len(fit)} + early-stop {len(val)}")
    rarity = Rarity.fit([t for p in train_all for t in (p.a, p.b)])
    x, y = _examples(fit, encode, rarity)
    xv, yv = _examples(val, encode, rarity)
    log(f"features: {x.shape}, positives {y.mean():.3f}; {time.time() - t0:.0f}s")
    verifier = _fit_mlp(x, y, xv, yv, seed, epochs, hidden, rarity)
    log(f"mlp trained; {time.time() - t0:.0f}s")

    verifier.context = _fit_context(val, encode, verifier, config)  # pairs the MLP never fit
    log(f"rival-aware stage fitted; {time.time() - t0:.0f}s")
    calib = split(pairs, "calib")
    out = collect(calib, encode, verifier, config)
    verifier.calib_probs, verifier.calib_correct = out.prob, out.prob_right
    verifier.calib_positive, verifier.confidence = out.n_positive, confidence
    bounds = {str(d): derive_bound(out.prob, out.prob_right, out.n_positive, d,
                                   confidence).as_dict()
              for d in DELTAS}
    log(f"calibrated on {len(calib)} pairs; {time.time() - t0:.0f}s")

    held = split(pairs, "eval")
    ev = collect(held, encode, verifier, config)
    evaluation = {str(d): figures(ev.prob, ev.prob_right, bounds[str(d)]["threshold"],
                                  ev.n_positive) for d in DELTAS}
    meta = {
        "model": "MLP over MiniLM pair features + lexical features (cache.features)",
        "hidden": list(hidden), "seed": seed, "epochs_max": epochs,
        "data": {"file": pairs_path.name, "sha256": file_digest(pairs_path),
                 "train_pairs": len(fit), "early_stop_pairs": len(val),
                 "calib_pairs": len(calib), "eval_pairs": len(held),
                 "split": "sha256(normalised text_a) % 100: <60 train, 60-74 calib, >=75 eval"},
        "cache_config": {"similarity_floor": config.similarity_floor, "top_k": config.top_k},
        "confidence": confidence, "bounds": bounds, "eval": evaluation,
        "train_seconds": round(time.time() - t0, 1),
    }
    verifier.meta = meta
    verifier.save(out_dir, meta)
    (out_dir / "MODEL_CARD.md").write_text(model_card(meta))
    return meta


def model_card(meta: dict[str, Any]) -> str:
    """The artifact's model card, written from its metadata."""
    d = meta["data"]
    rows = "\n".join(
        f"| {delta} | {b['threshold']:.4f} | {b['expected_hit_rate']:.3f} | "
        f"{b['expected_wrong_share']:.4f} | {e['hits']} | {e['wrong_hits']} | "
        f"{e['wrong_share']:.4f} | {e['recall']:.3f} |"
        for (delta, b), e in zip(meta["bounds"].items(), meta["eval"].values(), strict=True))
    return f"""# Cache verifier: model card

**What it is.** {meta["model"]}; hidden layers {meta["hidden"]}; inputs are the
two all-MiniLM-L6-v2 embeddings (cosine, product, absolute difference) and 22
lexical and word-rarity features; then a logistic stage over the pair score,
its cosine, and their margins over the best rival candidate of the same
lookup; above both, two rules (same text: 1; differing number, one-sided
negation or swapped polarity word: 0). Output: P(a hit on this cached prompt is
right). Numpy inference, no pickle (`verifier.npz`, `verifier.json`).

**Data.** `{d["file"]}` (sha256 `{d["sha256"][:16]}...`), GPTCache's pairs
from Quora Question Pairs; GPTCache is MIT-licensed, the questions are
Quora's (Quora's dataset terms apply). Split fixed by {d["split"]}:
{d["train_pairs"]} training pairs (plus one mined nearest-other-prompt negative
per query), {d["early_stop_pairs"]} early-stopping pairs (train part),
{d["calib_pairs"]} calibration pairs, {d["eval_pairs"]} evaluation pairs.
The evaluation part is used for nothing but the figures below.

**Decision.** A hit needs probability >= the bound for δ, derived on the
calibration part (cache run as served: floor {meta["cache_config"]["similarity_floor"]},
top-{meta["cache_config"]["top_k"]}) as the lowest probability whose
{meta["confidence"]:.0%} one-sided Clopper-Pearson upper limit of the wrong-hit
share is <= δ.

| δ | bound | exp. hit rate | exp. wrong share | hits | wrong | wrong share | recall |
|---|---|---|---|---|---|---|---|
{rows}

Eval: insert every `text_a` of the evaluation part, ask every `text_b`; a hit
is right if it returns that pair's own `text_a` and the label is 1, or a cached
prompt with the query's own text (an exact repeat); every other hit is wrong.
Recall = right hits / duplicates.

**Why the strict δ rows are empty.** QQP's labels call 16 % of calibration
pairs whose word sets are near-identical (Jaccard >= 0.95) *different*
questions ("What is a market mechanism?" / "What is market mechanism?" is
labelled 0), and a shared index adds hits on other pairs' prompts that are
the same question but count as wrong. No verifier can certify a wrong-hit
share below about 0.1 for paraphrases on these labels; at strict δ only exact
repeats hit (probability 1 by rule).

**Reproduce.** `cmesh cache train-verifier` (seed {meta["seed"]}, one torch
thread): {meta["train_seconds"]} s here with the embeddings cached
(`--embeddings`); embedding the file's 73k texts first took about 25 minutes on
this shared 2-core machine.

**Limits.** Trained on English Quora questions; chat prompts of other kinds
(commands, long documents, code) are outside its data, and the bound is only
as good as the calibration sample is like the traffic. Re-calibrate on own
traffic where possible.
"""
