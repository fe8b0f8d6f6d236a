"""`cmesh cache ...`: semantic cache tools (evaluation, verifier training)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Semantic cache tools.", no_args_is_help=True)
