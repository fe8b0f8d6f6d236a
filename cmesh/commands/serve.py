"""`cmesh serve <service>`: run one service in the foreground."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)
