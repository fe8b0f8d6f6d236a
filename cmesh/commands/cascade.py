"""`cmesh cascade ...`: choose, train and evaluate the difficulty classifier honestly.

Every command works on the development split: data/routellm de-duplicated,
less the lockbox subjects of `cascade/artifacts/lockbox.json`. Only
`evaluate` touches the lockbox, and only with the shipped artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cmesh.output import emit

app = typer.Typer(help="Difficulty classifier: select by nested CV, train, evaluate.",
                  no_args_is_help=True)

# The small tier's prefill statistics shipped for the development sample (issue 22).
PREFILL_STATS = Path(__file__).resolve().parents[2] / "cascade" / "artifacts" / "prefill_stats.npz"
DATA = typer.Option(Path("data/routellm"), "--data",
                    help="Folder of RouteLLM-format CSVs (contaminated prompts in its "
                         "*contaminated_prompts.jsonl files are left out).")
CACHE = typer.Option(Path("runs/cascade/embeddings.npz"), "--embeddings-cache",
                     help="npz of prompt embeddings, reused between runs.")
SEED = typer.Option(0, "--seed", help="Seed of the folds and the models.")
CANDIDATES = typer.Option("all", "--designs",
                          help="Candidate designs: 'all', 'features' (none that needs the "
                               "MiniLM embedding) or a comma-separated list of names "
                               "(cascade.designs).")
JSON = typer.Option(False, "--json", help="Print one JSON object as the last line.")


def _echo(message: str) -> None:
    typer.echo(message, err=True)


def _load(data: Path) -> Any:
    """The de-duplicated development / lockbox split of DATA."""
    from cascade.data import read_contaminated, read_tables
    from cascade.lockbox import Lockbox, split

    excluded = [p for f in sorted(data.glob("*contaminated_prompts.jsonl"))
                for p in read_contaminated(f)]
    return split(read_tables(data, exclude=excluded), Lockbox.load())


def _embed(prompts: list[str], cache: Path) -> Any:
    from cascade.training import embed_prompts
    from core.embedder import Embedder

    return embed_prompts(prompts, Embedder().encode, cache, progress=_echo)


def _candidates(which: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
    from cascade.designs import CHOICE_DESIGNS, OPEN_DESIGNS, get_design

    if which not in ("all", "features"):
        try:
            named = [get_design(n.strip()) for n in which.split(",") if n.strip()]
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--designs") from exc
        choice = {d.name: d for d in named if d.name in CHOICE_DESIGNS}
        open_ = {d.name: d for d in named if d.name in OPEN_DESIGNS}
        if not choice or not open_:
            raise typer.BadParameter("name at least one design of each head",
                                     param_hint="--designs")
        missing = {m for d in choice.values() for m in d.members} - set(choice)
        if missing:
            raise typer.BadParameter(f"ensemble members missing: {sorted(missing)}",
                                     param_hint="--designs")
        return choice, open_, any(d.components for d in named)

    def keep(designs: dict[str, Any]) -> dict[str, Any]:
        if which == "all":
            return dict(designs)
        flat = {n: d for n, d in designs.items() if d.components == 0 and not d.members}
        return {n: d for n, d in designs.items()
                if n in flat or (d.members and all(m in flat for m in d.members))}

    choice, open_ = keep(CHOICE_DESIGNS), keep(OPEN_DESIGNS)
    needs = any(d.components for d in (*choice.values(), *open_.values()))
    return choice, open_, needs


@app.command("train")
def train(
    data: Path = DATA,
    out: Path = typer.Option(Path("cascade/artifacts/difficulty.joblib"), "--out",
                             help="Artifact to write."),
    oof_out: Path = typer.Option(Path("runs/cascade/oof"), "--oof-out",
                                 help="Folder for the out-of-fold scores of the chosen designs, "
                                      "one RouteLLM CSV with a score column per head "
                                      "(choice.csv, open.csv), for `cmesh tune`."),
    candidates: str = CANDIDATES,
    router: str = typer.Option("features", "--router",
                               help="'features': one design per head from --designs "
                                    "(cascade.designs); 'backbone': prompt length plus a "
                                    "shrunk correction (cascade.backbone; ignores --designs)."),
    folds: int = typer.Option(5, "--folds", min=2, max=33, help="Folds of the selection CV."),
    seed: int = SEED,
    cache: Path = CACHE,
    as_json: bool = JSON,
) -> None:
    """Choose one design per head by CV on development data, fit it on all of it."""
    import numpy as np

    from cascade.designs import DESIGNS
    from cascade.evaluation import heads_of, select, select_backbone
    from cascade.training import fit
    from cascade.tuning import write_scored_csv

    if router not in ("features", "backbone"):
        raise typer.BadParameter("expected 'features' or 'backbone'", param_hint="--router")
    parts = _load(data)
    dev = parts.development
    if router == "backbone":
        embeddings = _embed(dev.prompts, cache)
        picked = select_backbone(dev, embeddings, folds, seed)
        artifact, inner_apgr, oof = picked.artifact, picked.inner_apgr, picked.oof
        names = (artifact.config["choice"]["name"], artifact.config["open"]["name"])
    else:
        choice, open_, needs = _candidates(candidates)
        embeddings = _embed(dev.prompts, cache) if needs else None
        chosen = select(dev, embeddings, choice, open_, folds, seed)
        artifact = fit(dev, embeddings, DESIGNS[chosen.choice], DESIGNS[chosen.open])
        inner_apgr, oof, names = chosen.inner_apgr, chosen.oof, (chosen.choice, chosen.open)
    _echo(f"chose {names[0]} (multiple choice) and {names[1]} (open questions)")
    artifact.metadata["selection"] = {"inner_apgr": inner_apgr, "folds": folds,
                                      "seed": seed, "router": router,
                                      "candidates": candidates if router == "features"
                                      else "cascade.backbone.candidates"}
    artifact.save(out)
    for head, rows in zip(("choice", "open"), heads_of(dev), strict=True):
        mask = np.zeros(len(dev), dtype=bool)
        mask[rows] = True
        write_scored_csv(dev.subset(mask), oof[mask], oof_out / f"{head}.csv")
    emit("cmesh cascade train", {
        "n": len(dev), "dedup_dropped": parts.dropped, "lockbox_rows_left_out": len(parts.lockbox),
        "router": router, "choice_design": names[0], "open_design": names[1],
        "inner_apgr": inner_apgr, "uses_embedding": artifact.uses_embedding,
        "version": artifact.version, "out": str(out), "oof_out": str(oof_out),
        "bytes": out.stat().st_size}, as_json)


@app.command("evaluate")
def evaluate(
    data: Path = DATA,
    outer: int = typer.Option(5, "--outer", min=2, max=33, help="Outer folds."),
    inner: int = typer.Option(4, "--inner", min=2, max=26, help="Inner folds."),
    candidates: str = CANDIDATES,
    seed: int = SEED,
    cache: Path = CACHE,
    artifact: Path | None = typer.Option(None, "--artifact",
                                         help="Shipped artifact scored on the lockbox "
                                              "(default: the packaged one)."),
    thresholds: Path | None = typer.Option(None, "--thresholds",
                                           help="Thresholds whose strong share is checked on "
                                                "the lockbox (default: the packaged ones)."),
    plot_dir: Path | None = typer.Option(None, "--plot-dir",
                                         help="Write outer-loop curves (PNG, CSV) here."),
    looks: Path | None = typer.Option(None, "--looks",
                                      help="Log of lockbox looks (default: the packaged "
                                           "cascade/artifacts/lockbox_looks.json)."),
    draws: int = typer.Option(100, "--draws", min=0, max=10000,
                              help="Yardstick draws per head (0: no yardstick)."),
    held_out: int = typer.Option(10, "--held-out", min=1, max=32,
                                 help="MMLU development subjects held out per yardstick draw."),
    fixed: str = typer.Option("form-ridge-within,form-ridge,open-form-ridge-100,"
                              "open-form-emb16-ridge-100", "--fixed",
                              help="Designs fixed in advance scored on the yardstick beside the "
                                   "nested length backbone ('' for none)."),
    yard_embed: bool = typer.Option(True, "--yardstick-embeddings/--no-yardstick-embeddings",
                                    help="Give the yardstick the MiniLM embeddings (the "
                                         "backbone's centroid shrink and embedding "
                                         "corrections need them)."),
    run_nested: bool = typer.Option(True, "--nested/--no-nested",
                                    help="Run issue 12's nested CV over --designs."),
    lockbox: bool = typer.Option(True, "--lockbox/--no-lockbox",
                                 help="Score the artifact on the lockbox (logged once per "
                                      "artifact version)."),
    prefill: bool = typer.Option(True, "--prefill/--no-prefill",
                                 help="Also run the yardstick on the rows with the small "
                                      "tier's prefill statistics (`--prefill-stats`), with "
                                      "and without them (as `cmesh cascade "
                                      "prefill-evaluate`, same --draws)."),
    prefill_stats: Path = typer.Option(PREFILL_STATS, "--prefill-stats",
                                       help="npz of the statistics."),
    as_json: bool = JSON,
) -> None:
    """Yardstick over held-out draws, nested CV, the prefill statistics' value, and the
    shipped artifact on the lockbox."""

    from cascade.designs import CHOICE_DESIGNS, OPEN_DESIGNS, get_design
    from cascade.evaluation import evaluate_head, heads_of, yardstick_head

    parts = _load(data)
    dev, box = parts.development, parts.lockbox
    choice, open_, needs = _candidates(candidates)
    try:
        fixed_designs = [get_design(n.strip()) for n in fixed.split(",") if n.strip()]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fixed") from exc
    wants = (needs and run_nested) or (draws > 0 and yard_embed)
    embeddings = _embed(dev.prompts, cache) if wants else None
    choice_rows, open_rows = heads_of(dev)
    heads: dict[str, Any] = {}
    yard: dict[str, Any] = {}
    for name, rows, designs, by_group in (("mmlu", choice_rows, choice, True),
                                          ("gsm8k", open_rows, open_, False)):
        if draws > 0:
            _echo(f"{name}: yardstick, {draws} draws")
            head_designs = CHOICE_DESIGNS if by_group else OPEN_DESIGNS
            mine = {d.name: d for d in fixed_designs if d.name in head_designs
                    and (yard_embed or not d.components)}
            yard[name] = yardstick_head(dev, embeddings if yard_embed else None, rows,
                                        by_group, mine, draws, held_out, inner=inner,
                                        seed=seed, progress=_echo)
        if not run_nested:
            continue
        _echo(f"{name}: nested CV, {outer} outer x {inner} inner folds, {len(designs)} designs")
        report = evaluate_head(dev, embeddings if needs else None, rows, designs, by_group,
                               outer, inner, seed, name, _echo)
        heads[name] = report.summary
        if plot_dir is not None:
            _plot(plot_dir / f"outer_{name}", report.nested.scores, dev.weak[rows],
                  dev.strong[rows], f"{name}, outer loop")
    headline: dict[str, Any] = {"seed": seed, "draws": draws, "held_out": held_out}
    for name, report in yard.items():
        routers = report["routers"]
        for router in ("backbone", "length", "random"):
            headline[f"{name}_yardstick_{router}_apgr_mean"] = routers[router]["apgr"]["mean"]
            headline[f"{name}_yardstick_{router}_apgr_std"] = routers[router]["apgr"]["std"]
            headline[f"{name}_yardstick_{router}_cpt50_mean"] = routers[router]["cpt50"]["mean"]
        diff = routers["backbone"]["apgr_minus_length"]
        headline[f"{name}_yardstick_backbone_minus_length"] = diff["mean"]
        headline[f"{name}_yardstick_backbone_minus_length_std"] = diff["std"]
    for name, summary in heads.items():
        headline[f"{name}_outer_apgr"] = summary["pooled"]["classifier"]["apgr"]
        headline[f"{name}_outer_length_apgr"] = summary["pooled"]["length"]["apgr"]
    out: dict[str, Any] = {"development": {"n": len(dev), "dedup_dropped": parts.dropped,
                                           **heads},
                           "yardstick": yard, "headline": headline}
    if prefill and draws > 0:
        from cascade.prefill import PrefillTable
        from cmesh.prefill_eval import evaluate as prefill_evaluate

        def embed(prompts: list[str]) -> Any:
            return _embed(prompts, cache)

        out["prefill"] = prefill_evaluate(dev, PrefillTable.load(prefill_stats), draws,
                                          held_out, seed, embed if yard_embed else None,
                                          _echo)
        for name in ("mmlu", "gsm8k"):
            for pair, diff in out["prefill"][name]["paired"].items():
                headline[f"{name}_prefill_paired {pair}"] = diff["mean"]
    if lockbox:
        out["lockbox"] = _lockbox(artifact, thresholds, looks, box, cache)
        pooled = out["lockbox"]["pooled"]
        headline.update({
            "lockbox_apgr": pooled["classifier"]["apgr"],
            "lockbox_length_apgr": pooled["length"]["apgr"],
            "lockbox_cpt50": pooled["classifier"]["cpt50"],
            "lockbox_length_cpt50": pooled["length"]["cpt50"],
            "lockbox_strong_share": out["lockbox"].get("strong_share", {}).get("share"),
            "artifact": out["lockbox"]["artifact"], "n_lockbox": len(box)})
    emit("cmesh cascade evaluate", out, as_json)


def _lockbox(artifact: Path | None, thresholds: Path | None, looks: Path | None, box: Any,
             cache: Path) -> dict[str, Any]:
    """The artifact on the lockbox beside length and random; the look is logged."""
    from cascade.classifiers import shipped_artifact_path
    from cascade.evaluation import lockbox_report
    from cascade.lockbox import LOOKS_PATH, Lockbox, record_look
    from cascade.thresholds import load_thresholds
    from cascade.training import Artifact

    shipped = Artifact.load(artifact or shipped_artifact_path())
    tuned = load_thresholds(thresholds)
    box_emb = _embed(box.prompts, cache) if shipped.uses_embedding else None
    top = tuned.tiers[-1]
    target = tuned.calibration.get("strong_share")
    lock = lockbox_report(shipped, Lockbox.load(), box, box_emb, tuned.route(top),
                          float(target) if target is not None else None)
    pooled = lock["pooled"]
    lock["looks"] = record_look(shipped.version, {
        "apgr": pooled["classifier"]["apgr"], "cpt50": pooled["classifier"]["cpt50"],
        "length_apgr": pooled["length"]["apgr"], "length_cpt50": pooled["length"]["cpt50"],
        "strong_share": lock.get("strong_share", {}).get("share")}, looks or LOOKS_PATH)
    return lock


def _plot(stem: Path, scores, weak, strong, title: str) -> None:  # type: ignore[no-untyped-def]
    from cascade.metrics import apgr
    from cascade.tuning import curve_rows, plot_curve, write_curve_csv

    rows = curve_rows(scores, weak, strong)
    write_curve_csv(rows, stem.with_suffix(".csv"))
    plot_curve(rows, stem.with_suffix(".png"),
               f"{title}: APGR {apgr(scores, weak, strong):.3f} (random 0.500)", None)




def _prefill_sample(data: Path, per_subject: int, gsm8k: int, seed: int) -> Any:
    from cascade.lockbox import Lockbox
    from cascade.prefill import sample

    dev = _load(data).development
    rows = sample(dev, per_subject, gsm8k, seed, Lockbox.load())
    return dev, rows


@app.command("prefill-stats")
def prefill_stats(
    data: Path = DATA,
    out: Path = typer.Option(PREFILL_STATS, "--out", help="npz of the statistics to write."),
    per_subject: int = typer.Option(50, "--per-subject", min=1,
                                    help="Development prompts sampled per MMLU subject."),
    gsm8k: int = typer.Option(300, "--gsm8k", min=0, help="GSM8K prompts sampled."),
    limit: int | None = typer.Option(None, "--limit", min=1,
                                     help="Only the first N sampled prompts (a speed check)."),
    chat: bool = typer.Option(True, "--chat/--raw",
                              help="Wrap each prompt in the chat template, as the gateway "
                                   "sends it to the small tier (--raw: the bare text)."),
    top: int = typer.Option(20, "--top", min=1, max=20,
                            help="Next-token candidates the entropy and option mass use."),
    chunk: int = typer.Option(16, "--chunk", min=1, max=256,
                              help="Concurrent prefills per checkpoint."),
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """SmolLM2's prefill statistics of sampled development prompts (never the lockbox),
    computed once by the backend engine into a hashed npz; resumes a partial run."""
    import time

    import numpy as np

    from cmesh.prefill_eval import compute

    dev, rows = _prefill_sample(data, per_subject, gsm8k, seed)
    if limit is not None:
        rows = rows[:limit]
    prompts = [dev.prompts[i] for i in rows]
    started = time.perf_counter()
    meta = {"per_subject": per_subject, "gsm8k": gsm8k, "seed": seed, "limit": limit,
            "subjects": sorted(set(dev.groups[i] for i in rows))}
    table, reused = compute(prompts, out, chat, top, chunk, meta, _echo)
    seconds = time.perf_counter() - started
    emit("cmesh cascade prefill-stats", {
        "n": len(prompts), "out": str(out), "inputs": table.meta["inputs"], "reused": reused,
        "seconds": seconds, "ms_per_prompt": 1000 * seconds / max(1, len(prompts)),
        "missing": int(np.isnan(table.features).any(axis=1).sum()),
        "bytes": out.stat().st_size}, as_json)


@app.command("prefill-evaluate")
def prefill_evaluate(
    data: Path = DATA,
    stats: Path = typer.Option(PREFILL_STATS, "--stats",
                               help="npz of the statistics (`cmesh cascade prefill-stats`)."),
    draws: int = typer.Option(100, "--draws", min=1, max=10000, help="Yardstick draws per head."),
    held_out: int = typer.Option(10, "--held-out", min=1, max=32,
                                 help="MMLU development subjects held out per draw."),
    with_embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings",
                                         help="Give the backbones the MiniLM embeddings "
                                              "(centroid shrink, embedding corrections)."),
    cache: Path = CACHE,
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """Issue 22's yardstick on the rows with prefill statistics: do they beat length and
    the length backbone on unseen subjects? Every router is scored on the same rows."""
    from cascade.prefill import PrefillTable
    from cmesh.prefill_eval import evaluate

    table = PrefillTable.load(stats)
    dev = _load(data).development
    embed = (lambda prompts: _embed(prompts, cache)) if with_embeddings else None
    report = evaluate(dev, table, draws, held_out, seed, embed, _echo)
    headline: dict[str, Any] = {"rows": report["rows"], "inputs": table.meta.get("inputs"),
                                "draws": draws, "seed": seed}
    for head in ("mmlu", "gsm8k"):
        for router, entry in report[head]["routers"].items():
            headline[f"{head}_{router}_apgr_mean"] = entry["apgr"]["mean"]
            headline[f"{head}_{router}_apgr_std"] = entry["apgr"]["std"]
            if "apgr_minus_length" in entry:
                diff = entry["apgr_minus_length"]
                headline[f"{head}_{router}_minus_length"] = diff["mean"]
                headline[f"{head}_{router}_at_least_length"] = diff["share_at_least_length"]
        for pair, diff in report[head]["paired"].items():
            headline[f"{head}_paired {pair}"] = diff["mean"]
            headline[f"{head}_paired {pair} std"] = diff["std"]
    emit("cmesh cascade prefill-evaluate", {"headline": headline, **report}, as_json)
