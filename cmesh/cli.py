"""`cmesh`: one entry point for preparing models, serving, asking, benchmarking and tuning.

Each command group lives in its own module under `cmesh/commands/`; heavy
imports (torch, vllm, faiss) happen inside the commands, never at import time.
"""

from __future__ import annotations

import os

import typer

from cmesh.commands import batch, bench, cache, cascade, gateway, models, serve, tune

app = typer.Typer(
    name="cmesh",
    help="cascade-mesh: semantic cache + difficulty classifier + small/large model cascade.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(models.app, name="models")
app.add_typer(serve.app, name="serve")
app.add_typer(bench.app, name="bench")
app.add_typer(cache.app, name="cache")
app.add_typer(cascade.app, name="cascade")
app.command("tune")(tune.tune)
app.command("up")(serve.up)
app.command("ask")(gateway.ask)
app.command("status")(gateway.status)
app.add_typer(gateway.keys_app, name="keys")
app.add_typer(batch.app, name="batch")


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    app()


if __name__ == "__main__":
    main()
