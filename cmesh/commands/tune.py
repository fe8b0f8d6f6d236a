"""`cmesh tune`: cost-quality curve and thresholds from RouteLLM-format data.

It only scores PATH with the shipped classifier (or reads scores already in
a column of PATH, such as out-of-fold scores); it never trains on it. When
PATH overlaps the classifier's training data (the shipped one saw all of
`data/routellm/`), the overlap is printed: figures on those rows are
in-sample, use `cmesh cascade evaluate` for held-out ones.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cmesh.output import emit


def tune(
    data: Path = typer.Option(..., "--data", help="RouteLLM-format CSV or folder of CSVs."),
    target: str = typer.Option(
        "strong-fraction=0.3", "--target",
        help="strong-fraction=F (share of calls to the strong tier) or quality=Q "
             "(share of the strong tier's accuracy to keep).",
    ),
    out: Path = typer.Option(Path("runs/tune/thresholds.json"), "--out",
                             help="Thresholds file to write."),
    plot: Path | None = typer.Option(None, "--plot",
                                     help="PNG of the curve (default: beside --out)."),
    curve: Path | None = typer.Option(None, "--curve",
                                      help="CSV of the curve (default: beside --out)."),
    base: Path | None = typer.Option(
        None, "--base", help="Thresholds file to start from (tiers, cascade thresholds); "
                             "default: the shipped one."),
    classifier: str | None = typer.Option(
        None, "--classifier", help="Registry name; default: the base file's classifier."),
    artifact: Path | None = typer.Option(None, "--artifact", help="Classifier artifact."),
    band: float = typer.Option(0.15, "--band", min=0.0, max=1.0,
                               help="Hybrid: share of calls either side of the target "
                                    "that is cascaded."),
    scores_column: str | None = typer.Option(
        None, "--scores-column",
        help="Take the scores from this column of PATH instead of scoring it (out-of-fold "
             "scores written by `cmesh cascade train --oof-out`)."),
    exclude: list[Path] = typer.Option([], "--exclude",
                                       help="JSONL of prompts to leave out (RouteLLM's "
                                            "contaminated prompts)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Score PATH, print APGR/CPT beside random and oracle, write thresholds, curve and PNG."""
    from cascade.classifiers import TrainedClassifier, make_classifier
    from cascade.data import TableError, read_column, read_contaminated, read_tables
    from cascade.metrics import summarize
    from cascade.thresholds import ThresholdError, load_thresholds, save_thresholds
    from cascade.tuning import (
        Target,
        calibrate,
        curve_rows,
        plot_curve,
        share_for_quality,
        write_curve_csv,
    )

    try:
        goal = Target.parse(target)
        base_thresholds = load_thresholds(base)
        excluded = [p for path in exclude for p in read_contaminated(path)]
        table = read_tables(data, exclude=excluded)
        name = classifier or base_thresholds.classifier
        kwargs = {"artifact": artifact} if artifact else {}
        model = make_classifier(name, **kwargs)
        if scores_column is not None:
            if excluded:
                raise ValueError("--scores-column reads every row: do not combine with --exclude")
            scores = read_column(data, scores_column)
        else:
            scores = model.score(table.prompts)
    except (TableError, ThresholdError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    summary = summarize(scores, table.weak, table.strong)
    if goal.kind == "strong-fraction":
        share = goal.value
    else:
        share = share_for_quality(scores, table.weak, table.strong, goal.value)
    rows = curve_rows(scores, table.weak, table.strong)
    in_training = (
        model.artifact.overlap(table.prompts)
        if isinstance(model, TrainedClassifier) and scores_column is None else 0.0
    )
    figures: dict[str, float | int | str] = {
        **summary.as_dict(),
        "target": f"{goal.kind}={goal.value:g}",
        "strong_share": share,
        "threshold": 0.0,
        "accuracy_at_target": float(
            next(r["accuracy"] for r in rows if r["strong_share"] >= share - 1e-9)
        ),
        "classifier": f"{model.name}@{model.version}",
        "scores": f"column {scores_column!r} of --data" if scores_column else "scored now",
        "in_training_share": in_training,
    }
    calibration = {
        "data": str(data),
        "n": len(table),
        "target": figures["target"],
        "strong_share": share,
        "apgr": summary.apgr,
        "classifier": figures["classifier"],
        "scores": figures["scores"],
        "command": f"cmesh tune --data {data} --target {figures['target']}"
                   + (f" --scores-column {scores_column}" if scores_column else "")
                   + f" --out {out}",
    }
    tuned = calibrate(base_thresholds.model_copy(update={"classifier": name}), scores, share,
                      band, calibration)
    figures["threshold"] = tuned.route(tuned.tiers[-1])
    save_thresholds(tuned, out)
    png = plot or out.with_suffix(".png")
    csv_path = curve or out.with_suffix(".csv")
    write_curve_csv(rows, csv_path)
    sample = " in-sample" if in_training > 0.5 else ""
    plot_curve(rows, png, f"{Path(data).name}: APGR{sample} {summary.apgr:.3f} "
                          f"(random {summary.random_apgr:.3f})", share)
    if in_training > 0:
        typer.echo(f"note: {in_training:.0%} of these prompts were in the classifier's "
                   "training data; its figures on them are in-sample.", err=True)
    typer.echo(f"wrote {out}, {png}, {csv_path}", err=True)
    emit(f"cmesh tune: {data}", figures, as_json)
