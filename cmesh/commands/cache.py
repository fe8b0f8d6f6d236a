"""`cmesh cache ...`: semantic cache tools (evaluation, calibration, verifier training)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Semantic cache tools.", no_args_is_help=True)

DEFAULT_PAIRS = Path("data/gptcache/qqp_pairs_dev.json.gz")
PAIRS_HELP = ("GPTCache {origin, similar} or labelled {text_a, text_b, label[, kind]} pairs, "
              "JSON or .json.gz.")
EMBED_HELP = "npz of text -> vector reused between runs (written too)."


@app.command("eval")
def eval_(
    pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False, help=PAIRS_HELP),
    delta: float = typer.Option(0.05, "--delta", min=0.0001, max=0.5,
                                help="Target share of hits that are wrong."),
    calibrate_on: Path | None = typer.Option(
        None, "--calibrate-on", exists=True, dir_okay=False,
        help="Derive the bound from this file's calibration part (default: shipped table)."),
    limit: int = typer.Option(0, "--limit", min=0,
                              help="Evaluate only the first N pairs of the part (0: all)."),
    calibrate_limit: int = typer.Option(0, "--calibrate-limit", min=0,
                                        help="Calibrate on the first N pairs of C's part."),
    verifier: Path | None = typer.Option(None, "--verifier", help="Verifier artifact folder."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help=EMBED_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Replay a file's evaluation part through the cache; verifier beside static cosine.

    The output names the part evaluated, where the bound came from, and how many
    of the file's texts the verifier trained on.
    """
    from cmesh.cache_eval import run_eval
    from cmesh.output import emit

    title, result = run_eval(pairs, delta, calibrate_on, limit, verifier, embeddings,
                             log=lambda s: typer.echo(s, err=True),
                             calibrate_limit=calibrate_limit)
    emit(title, result, as_json)


@app.command("calibrate")
def calibrate(
    pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False, help=PAIRS_HELP),
    out: Path = typer.Option(Path("calibration.npz"), "--out",
                             help="Table to write (npz; a readable .json beside it). Serve it "
                                  "with CMESH_CACHE_CALIBRATION_PATH."),
    verifier: Path | None = typer.Option(None, "--verifier", help="Verifier artifact folder."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help=EMBED_HELP),
) -> None:
    """Derive a δ -> bound table from your own labelled pairs (their calibration part only)."""
    from cache.verifier import CrossVerifier
    from cmesh.cache_eval import bounds_table, encoder, write_table
    from cmesh.cache_eval import calibrate as run

    outcomes = run(pairs, CrossVerifier.load(verifier), encoder(embeddings), log=typer.echo)
    write_table(outcomes, out)
    for delta, b in bounds_table(outcomes).items():
        typer.echo(f"delta={delta}: bound={b['threshold']:.4f} "
                   f"expected hit rate={b['expected_hit_rate']:.3f} "
                   f"wrong share={b['expected_wrong_share']:.4f}")


@app.command("train")
def train(
    pairs: Path = typer.Option(DEFAULT_PAIRS, "--pairs", exists=True, dir_okay=False),
    out: Path = typer.Option(Path("cache/artifacts/verifier"), "--out"),
    steps: int = typer.Option(0, "--steps", min=0,
                              help="Steps of the LR schedule (0: one pass of the data)."),
    stop_at: int = typer.Option(0, "--stop-at", min=0,
                                help="End after this many steps; 0: all."),
    seed: int = typer.Option(0, "--seed"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint",
                                           help="Resume from / save to this file."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help=EMBED_HELP),
) -> None:
    """Fine-tune, export (ONNX int8), and calibrate the verifier reproducibly (2-core CPU:
    ~25 min)."""
    from cache.training import train_model
    from cmesh.cache_eval import ship

    train_model(pairs, out, steps=steps, seed=seed, checkpoint=checkpoint, stop_at=stop_at,
                log=typer.echo)
    meta = ship(out, embeddings, log=typer.echo)
    for delta, b in meta["bounds"].items():
        typer.echo(f"delta={delta}: bound={b['threshold']:.4f} "
                   f"expected hit rate={b['expected_hit_rate']:.3f}")


@app.command("ship")
def ship_(
    out: Path = typer.Option(Path("cache/artifacts/verifier"), "--out",
                             help="Verifier artifact folder to calibrate in place."),
    embeddings: Path | None = typer.Option(None, "--embeddings", help=EMBED_HELP),
) -> None:
    """Recalibrate a trained artifact on the shipped calibration parts (no training):
    rewrites its calibration.npz, verifier.json and MODEL_CARD.md."""
    from cmesh.cache_eval import ship

    meta = ship(out, embeddings, log=typer.echo)
    for delta, b in meta["bounds"].items():
        typer.echo(f"delta={delta}: bound={b['threshold']:.4f} "
                   f"expected hit rate={b['expected_hit_rate']:.3f} "
                   f"wrong share={b['expected_wrong_share']:.4f}")


@app.command("rules")
def rules(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Each verifier rule's refusals of paraphrases and look-alikes on the calibration
    parts and the written training and calibration pairs (never an evaluation part)."""
    import json

    from cache.training import training_hashes
    from cache.verifier import ARTIFACT_DIR
    from cmesh.cache_eval import rule_audit

    audit = rule_audit(training_hashes(ARTIFACT_DIR))
    if as_json:
        typer.echo(json.dumps(audit))
        return
    for part, table in audit.items():
        total = table.pop("pairs")
        typer.echo(f"{part}: {total['paraphrases']} paraphrases, "
                   f"{total['look_alikes']} look-alikes")
        for rule, n in table.items():
            typer.echo(f"  {rule:22s} refuses {n['paraphrases']:5d} paraphrases "
                       f"{n['look_alikes']:5d} look-alikes")
