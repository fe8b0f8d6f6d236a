"""`cmesh cascade ...`: train the difficulty classifier and evaluate it honestly."""

from __future__ import annotations

from pathlib import Path

import typer

from cmesh.output import emit

app = typer.Typer(help="Difficulty classifier: train, evaluate by held-out subject.",
                  no_args_is_help=True)

DATA = typer.Option(Path("data/routellm"), "--data",
                    help="Folder of RouteLLM-format CSVs (contaminated prompts in its "
                         "*contaminated_prompts.jsonl files are left out).")
CACHE = typer.Option(Path("runs/cascade/embeddings.npz"), "--embeddings-cache",
                     help="npz of prompt embeddings, reused between runs.")
COMPONENTS = typer.Option(16, "--components", min=0, max=384,
                          help="Principal components of the MiniLM embedding fed to the "
                               "multiple-choice head (0: surface features only).")
OPEN_COMPONENTS = typer.Option(16, "--open-components", min=0, max=384,
                               help="Principal components fed to the open-question head.")
SEED = typer.Option(0, "--seed", help="Random seed of the model and the GSM8K folds.")


def _load(data: Path, embed: bool, cache: Path):  # type: ignore[no-untyped-def]
    from cascade.data import read_contaminated, read_tables
    from cascade.training import embed_prompts

    excluded = [p for f in sorted(data.glob("*contaminated_prompts.jsonl"))
                for p in read_contaminated(f)]
    table = read_tables(data, exclude=excluded)
    embeddings = None
    if embed:
        from core.embedder import Embedder

        embedder = Embedder()
        embeddings = embed_prompts(table.prompts, embedder.encode, cache,
                                   progress=lambda m: typer.echo(m, err=True))
    return table, embeddings


@app.command("train")
def train(
    data: Path = DATA,
    out: Path = typer.Option(Path("cascade/artifacts/difficulty.joblib"), "--out",
                             help="Artifact to write."),
    components: int = COMPONENTS,
    open_components: int = OPEN_COMPONENTS,
    seed: int = SEED,
    cache: Path = CACHE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Fit the classifier on all of DATA and write its artifact."""
    from cascade.training import TrainConfig, fit

    table, embeddings = _load(data, components + open_components > 0, cache)
    config = TrainConfig(choice_components=components, open_components=open_components,
                         seed=seed)
    artifact = fit(table, embeddings, config)
    artifact.save(out)
    emit("cmesh cascade train", {"n": len(table), "components": components,
                                 "open_components": open_components, "seed": seed,
                                 "version": artifact.version, "out": str(out),
                                 "bytes": out.stat().st_size}, as_json)


@app.command("evaluate")
def evaluate(
    data: Path = DATA,
    components: int = COMPONENTS,
    open_components: int = OPEN_COMPONENTS,
    seed: int = SEED,
    folds: int = typer.Option(5, "--folds", min=2, max=43, help="Cross-validation folds."),
    cache: Path = CACHE,
    thresholds_out: Path | None = typer.Option(
        None, "--thresholds-out",
        help="Also write thresholds calibrated on the held-out scores (strong-fraction "
             "--share), the honest stand-in for scores of prompts never seen."),
    share: float = typer.Option(0.3, "--share", min=0.0, max=1.0,
                                help="Strong-call share for --thresholds-out."),
    plot_dir: Path | None = typer.Option(None, "--plot-dir",
                                         help="Write held-out curves (PNG, CSV) here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """APGR with MMLU subjects held out (GroupKFold) and GSM8K prompts held out (KFold)."""
    import numpy as np

    from cascade.classifiers import LengthClassifier
    from cascade.metrics import apgr
    from cascade.training import TrainConfig, cross_validate

    table, embeddings = _load(data, components + open_components > 0, cache)
    config = TrainConfig(choice_components=components, open_components=open_components,
                         seed=seed)
    result = cross_validate(table, embeddings, config, folds=folds,
                            progress=lambda m: typer.echo(m, err=True))
    is_gsm = np.asarray(table.groups) == "gsm8k_responses"
    length = LengthClassifier().score(table.prompts)
    for name, rows in (("mmlu", ~is_gsm), ("gsm8k", is_gsm)):
        if plot_dir is not None:
            _plot(plot_dir / f"heldout_{name}", result.scores[rows], table.weak[rows],
                  table.strong[rows], f"{name}, held out")
    if thresholds_out is not None:
        from cascade.thresholds import load_thresholds, save_thresholds
        from cascade.tuning import calibrate

        save_thresholds(calibrate(load_thresholds(), result.scores, share, calibration={
            "data": str(data), "n": len(table), "target": f"strong-fraction={share:g}",
            "strong_share": share, "scores": "held-out (cmesh cascade evaluate)",
            "mmlu_apgr": result.mmlu_apgr, "gsm8k_apgr": result.gsm8k_apgr,
            "command": f"cmesh cascade evaluate --seed {seed} --thresholds-out "
                       f"{thresholds_out} --share {share:g}"}), thresholds_out)
    emit("cmesh cascade evaluate (held-out APGR)", {
        "mmlu_apgr": result.mmlu_apgr,
        "gsm8k_apgr": result.gsm8k_apgr,
        "mmlu_length_apgr": apgr(length[~is_gsm], table.weak[~is_gsm], table.strong[~is_gsm]),
        "gsm8k_length_apgr": apgr(length[is_gsm], table.weak[is_gsm], table.strong[is_gsm]),
        "random_apgr": 0.5,
        "mmlu_n": result.mmlu_n,
        "gsm8k_n": result.gsm8k_n,
        "folds": folds,
        "components": components,
        "open_components": open_components,
        "seed": seed,
    }, as_json)


def _plot(stem: Path, scores, weak, strong, title: str) -> None:  # type: ignore[no-untyped-def]
    from cascade.metrics import apgr
    from cascade.tuning import curve_rows, plot_curve, write_curve_csv

    rows = curve_rows(scores, weak, strong)
    write_curve_csv(rows, stem.with_suffix(".csv"))
    plot_curve(rows, stem.with_suffix(".png"),
               f"{title}: APGR {apgr(scores, weak, strong):.3f} (random 0.500)", None)
