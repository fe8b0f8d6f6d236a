"""`cmesh models ...`: prepare the local models (idempotent, offline)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Prepare local models (no model hub involved).", no_args_is_help=True)


@app.command("prepare")
def prepare(
    models_dir: Path | None = typer.Option(
        None, "--models-dir", help="Cache folder (default $CMESH_MODELS_DIR or ~/.cache/...)."
    ),
    tiny: bool = typer.Option(True, help="Also build the tiny random Llama for TP tests."),
) -> None:
    """Dequantise SmolLM2, build the tiny TP Llama, locate MiniLM and export it to ONNX."""
    import logging

    from core import models

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    typer.echo(f"smollm2:  {models.prepare_smollm2(models_dir)}")
    if tiny:
        typer.echo(f"tiny TP:  {models.prepare_tiny_llama(models_dir)}")
    typer.echo(f"minilm:   {models.minilm_path()}")
    from core.onnx_encoder import plain_stack, prepare

    if plain_stack(models.minilm_path()):
        typer.echo(f"minilm onnx: {prepare(models.minilm_path())}")
