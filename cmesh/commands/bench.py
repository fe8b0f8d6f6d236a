"""`cmesh bench ...`: benchmarks that print ratios measured within one run.

Every benchmark takes --quick (seconds per scenario, for CI) and --json (the
last line printed is one JSON object with the figures).
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Benchmarks; each prints its figures as ratios measured in one run.",
                  no_args_is_help=True)

QUICK = typer.Option(False, "--quick", help="A short run, seconds per scenario.")
JSON = typer.Option(False, "--json", help="Print one JSON object as the last line.")


@app.command("backend")
def backend(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """gRPC backend against the same vLLM AsyncLLM called directly."""
    from cmesh.bench import backend as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("cache")
def cache(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Semantic cache: lookup latency, micro-batching gain, service vs raw encode."""
    from cmesh.bench import cache as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("classifier")
def classifier(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Difficulty classifier: Score latency and batched rate against raw MiniLM encode."""
    from cmesh.bench import classifier as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("gateway")
def gateway(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Gateway: time to first token added on a miss, throughput kept at concurrency 16."""
    from cmesh.bench import gateway as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("openai")
def openai_door(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """HTTP door against gRPC Ask: added TTFT, throughput ratio, TTFT while a batch runs."""
    from cmesh.bench import openai as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("broker")
def broker(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Broker against direct gRPC: throughput ratio, added TTFT, affinity TTFT ratio."""
    from cmesh.bench import broker as impl

    impl.main(quick=quick, as_json=as_json)


OUT = typer.Option(None, "--out", help="Write figures.json, a markdown table and PNG "
                   "plots to this folder.")
SOAK = typer.Option(False, "--soak", help="Add 10 minutes of the mesh at M0's sustainable "
                    "rate on repeat30 (errors, RSS over it; also with --quick).")


@app.command("system")
def system(quick: bool = QUICK, as_json: bool = JSON, out: Path | None = OUT,
           soak: bool = SOAK) -> None:
    """The mesh (cache off and on) beside vLLM's own OpenAI server and LiteLLM, driven by
    vLLM's benchmark client with the same workload files: closed loop, a rate ladder,
    overload past it."""
    from cmesh.bench import system as impl

    impl.main(quick=quick, as_json=as_json, out=out, soak=soak)


@app.command("prefill")
def prefill(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Small tier's Prefill: its latency, and the answer's TTFT right after it against cold."""
    from cmesh.bench import prefill as impl

    impl.main(quick=quick, as_json=as_json)


@app.command("regions")
def regions(quick: bool = QUICK, as_json: bool = JSON) -> None:
    """Two regions on one machine: TTFT added when served by the other region, time to
    fail over when a region loses its backend, cache replication lag between them."""
    from cmesh.bench import regions as impl

    impl.main(quick=quick, as_json=as_json)
