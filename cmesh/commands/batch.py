"""`cmesh batch submit|status|results|cancel`: OpenAI Batch API jobs on the running stack.

They talk to the gateway's HTTP door (`cmesh up` prints its base URL) with the
stack's dev key by default, over plain HTTP, so any OpenAI-style batch file
works: one `{custom_id, method, url, body}` JSON object per line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from cmesh.client import DEFAULT_STATE

app = typer.Typer(help="OpenAI Batch API jobs through the gateway's HTTP door.",
                  no_args_is_help=True)
STATE = typer.Option(DEFAULT_STATE, "--state-dir", help="Where `cmesh up` keeps its state.")
BASE_URL = typer.Option(None, "--base-url", help="The door's base URL (default: the stack's).")
KEY = typer.Option(None, "--key", envvar="CMESH_API_KEY",
                   help="API key (default: the stack's dev key).")
DONE = ("completed", "failed", "expired", "cancelled")


def _client(base_url: str | None, key: str | None, state_dir: Path) -> Any:
    import httpx

    from cmesh.client import read_door, read_key

    return httpx.Client(base_url=base_url or read_door(state_dir),
                        headers={"authorization": f"Bearer {key or read_key(state_dir)}"},
                        timeout=60)


def _checked(reply: Any) -> Any:
    """The reply's JSON, or the door's error message as a clean CLI failure."""
    if reply.status_code >= 400:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text
        raise typer.BadParameter(f"{reply.status_code}: {message}")
    return reply.json()


def _summary(batch: dict[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    extra = batch.get("cascade") or {}
    return (f"{batch['id']} {batch['status']}: {counts.get('completed', 0)} completed, "
            f"{counts.get('failed', 0)} failed of {counts.get('total', 0)}; "
            f"{extra.get('cache_hits', 0)} cache hits, cost {extra.get('cost', 0):.5f} "
            f"(all on the top tier: {extra.get('cost_if_top_tier', 0):.5f})")


def _wait(http: Any, batch: dict[str, Any], poll_s: float) -> dict[str, Any]:
    from rich.progress import Progress

    from cmesh.output import console

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(batch["status"], total=None)
        while batch["status"] not in DONE:
            time.sleep(poll_s)
            batch = _checked(http.get(f"/batches/{batch['id']}"))
            counts = batch["request_counts"]
            progress.update(bar, description=batch["status"], total=counts["total"] or None,
                            completed=counts["completed"] + counts["failed"])
    return batch


@app.command("submit")
def submit(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL batch file."),
    endpoint: str = typer.Option("/v1/chat/completions",
                                 help="/v1/chat/completions or /v1/completions."),
    wait: bool = typer.Option(False, "--wait", help="Show progress until the batch ends."),
    poll_s: float = typer.Option(1.0, "--poll-s", min=0.05, help="Seconds between polls."),
    base_url: str | None = BASE_URL, key: str | None = KEY, state_dir: Path = STATE,
) -> None:
    """Upload FILE and start a batch; print its id (and, with --wait, how it ended)."""
    from cmesh.output import console

    with _client(base_url, key, state_dir) as http:
        upload = _checked(http.post("/files", data={"purpose": "batch"},
                                    files={"file": (file.name, file.read_bytes())}))
        batch = _checked(http.post("/batches", json={
            "input_file_id": upload["id"], "endpoint": endpoint, "completion_window": "24h"}))
        console.print(batch["id"])
        if wait:
            batch = _wait(http, batch, poll_s)
            console.print(_summary(batch))
            if batch["status"] != "completed":
                raise typer.Exit(1)


@app.command("status")
def status(batch_id: str = typer.Argument(...),
           as_json: bool = typer.Option(False, "--json", help="The whole batch object."),
           base_url: str | None = BASE_URL, key: str | None = KEY,
           state_dir: Path = STATE) -> None:
    """Status, line counts, cache hits and cost of a batch."""
    from cmesh.output import console

    with _client(base_url, key, state_dir) as http:
        batch = _checked(http.get(f"/batches/{batch_id}"))
    if as_json:
        console.print_json(json.dumps(batch))
    else:
        console.print(_summary(batch))


@app.command("results")
def results(batch_id: str = typer.Argument(...),
            out: Path | None = typer.Option(None, "--out", help="Write here, not to stdout."),
            errors: bool = typer.Option(False, "--errors", help="The error file instead."),
            base_url: str | None = BASE_URL, key: str | None = KEY,
            state_dir: Path = STATE) -> None:
    """The output (or error) file of a finished batch, as JSONL."""
    with _client(base_url, key, state_dir) as http:
        batch = _checked(http.get(f"/batches/{batch_id}"))
        file_id = batch["error_file_id" if errors else "output_file_id"]
        if file_id is None:
            raise typer.BadParameter(f"batch {batch_id} ({batch['status']}) has no "
                                     f"{'error' if errors else 'output'} file")
        reply = http.get(f"/files/{file_id}/content")
        if reply.status_code >= 400:
            _checked(reply)
    if out is None:
        typer.echo(reply.text, nl=False)
    else:
        out.write_bytes(reply.content)


@app.command("cancel")
def cancel(batch_id: str = typer.Argument(...), base_url: str | None = BASE_URL,
           key: str | None = KEY, state_dir: Path = STATE) -> None:
    """Stop starting lines; finished lines stay in the output file."""
    from cmesh.output import console

    with _client(base_url, key, state_dir) as http:
        console.print(_summary(_checked(http.post(f"/batches/{batch_id}/cancel"))))
