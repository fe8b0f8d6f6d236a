"""`cmesh models ...`: prepare the local models."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare local models.", no_args_is_help=True)
