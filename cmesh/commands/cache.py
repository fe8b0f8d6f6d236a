"""`cmesh cache ...`: semantic cache tools (evaluation, verifier training)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Semantic cache tools.", no_args_is_help=True)

DEFAULT_PAIRS = Path("data/gptcache/qqp_pairs_dev.json.gz")


@app.command("eval")
def eval_(
    pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False,
                               help="GPTCache {origin, similar} or labelled {text_a, text_b, "
                                    "label} pairs, JSON or .json.gz."),
    delta: float = typer.Option(0.02, "--delta", min=0.0001, max=0.5,
                                help="Target wrong-hit share of hits."),
    limit: int = typer.Option(0, "--limit", min=0, help="Use only the first N pairs (0: all)."),
    verifier: Path | None = typer.Option(None, "--verifier", help="Verifier artifact folder."),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="npz of text -> vector reused between runs (written too)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
) -> None:
    """Replay pairs through the cache; verifier figures beside static cosine thresholds.

    On the verifier's own training file only its held-out eval part is used.
    """
    from cmesh.cache_eval import run_eval
    from cmesh.output import emit

    title, result = run_eval(pairs, delta, limit, verifier, embeddings)
    emit(title, result, as_json)


@app.command("train-verifier")
def train_verifier(
    pairs: Path = typer.Option(DEFAULT_PAIRS, "--pairs", exists=True, dir_okay=False),
    out: Path = typer.Option(Path("cache/artifacts/verifier"), "--out"),
    seed: int = typer.Option(0, "--seed"),
    epochs: int = typer.Option(40, "--epochs", min=1),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="npz of text -> vector reused between runs (written too)."),
) -> None:
    """Retrain, calibrate and evaluate the verifier reproducibly (CPU, minutes)."""
    from cache.training import cached_encoder, train
    from core.embedder import Embedder

    embedder = Embedder()
    encode = cached_encoder(lambda texts: embedder.encode(texts, batch_size=128), embeddings)
    meta = train(pairs, out, encode, seed=seed, epochs=epochs, log=typer.echo)
    for delta, fig in meta["eval"].items():
        typer.echo(f"delta={delta}: threshold={meta['bounds'][delta]['threshold']:.4f} "
                   f"eval wrong_share={fig['wrong_share']:.4f} recall={fig['recall']:.4f}")
