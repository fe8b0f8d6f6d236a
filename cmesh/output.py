"""How commands print figures: a readable table, then (with --json) one JSON line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def emit(title: str, figures: Mapping[str, Any], as_json: bool) -> None:
    """Print `figures` as a table; with `as_json` the last line is one JSON object."""
    table = Table(title=title, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, _fmt(value))
    console.print(table)
    if as_json:
        print(json.dumps(dict(figures), sort_keys=True, default=float), flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
