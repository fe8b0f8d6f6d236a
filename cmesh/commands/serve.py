"""`cmesh serve <service> [flags]` runs one service; `cmesh up` runs the local stack."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from pathlib import Path

import typer

from cmesh import terminate

app = typer.Typer(help="Run one service in the foreground (flags pass through).",
                  no_args_is_help=True)
SERVICES = ("backend", "broker", "cache", "classifier", "gateway")
_PASS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _make(name: str) -> None:
    @app.command(name, context_settings=_PASS, add_help_option=False,
                 help=f"Run the {name} service; `cmesh serve {name} --help` lists its settings.")
    def command(ctx: typer.Context) -> None:
        importlib.import_module(f"services.{name}.main").main(ctx.args)


for _name in SERVICES:
    _make(_name)


def up(
    demo: bool = typer.Option(False, "--demo", help="Run the demo, then stop the stack."),
    only: str = typer.Option(
        "", help="Comma-separated services (backend-small, backend-large, cache, classifier, "
        "broker, gateway)."),
    nats_cluster: int = typer.Option(
        1, "--nats-cluster", min=1, max=5,
        help="NATS nodes: 3 runs a JetStream cluster with replicated streams."),
    regions: int = typer.Option(
        1, "--regions", min=1, max=4,
        help="2-4: that many regions (a, b, ...) on this machine, a nats-server each joined "
        "as a supercluster, each with its own backend, cache, broker and gateway failing "
        "over to the others (docs/regions.md)."),
    large_model: str | None = typer.Option(
        None, help="Model folder for backend-large (default: SmolLM2 again)."),
    state_dir: Path = typer.Option(
        Path.home() / ".cache" / "cascade-mesh" / "stack", help="Logs, ports, JetStream data."),
) -> None:
    """Bring the local stack up (nats-server + services), print addresses, run until Ctrl-C;
    a service that dies is restarted (cmesh.supervisor)."""
    from cmesh import demo as demo_mod
    from cmesh.client import read_door
    from cmesh.output import console
    from cmesh.stack import (
        REGION_NAMES,
        LocalStack,
        default_specs,
        ensure_dev_keys,
        region_specs,
        select_specs,
    )
    from services.common.server import wait_for_signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    wanted = {s.strip() for s in only.split(",") if s.strip()}
    names = REGION_NAMES[:regions] if regions > 1 else ()
    if names:
        for given, flag in ((only, "--only"), (demo, "--demo"), (nats_cluster > 1,
                                                                  "--nats-cluster")):
            if given:
                raise typer.BadParameter("not with --regions (one region's stack only)",
                                         param_hint=flag)
        specs = region_specs(names, ensure_dev_keys(state_dir))
    else:
        try:
            specs = select_specs(default_specs(large_model, ensure_dev_keys(state_dir)), wanted)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--only") from exc
    unknown = wanted - {s.name for s in specs}
    if unknown:
        listed = ", ".join(sorted(unknown))
        raise typer.BadParameter(f"unknown services: {listed}", param_hint="--only")

    async def run() -> None:
        console.print(f"starting {', '.join(s.name for s in specs)} (logs in {state_dir})")
        async with LocalStack(specs, state_dir, nats_cluster=nats_cluster,
                              supervise=True, regions=names) as stack:
            addresses = json.loads((state_dir / "addresses.json").read_text())
            console.print(stack_table(stack, addresses))
            for region in names:
                with contextlib.suppress(OSError):
                    console.print(f"region {region}: gateway {addresses[f'gateway-{region}']}, "
                                  f"OpenAI door {read_door(state_dir, region)}")
            if "gateway" in addresses:
                console.print(f"dev API key in {state_dir / 'dev-api-key'}; try "
                              "`cmesh ask \"What is the capital of France?\"`")
                with contextlib.suppress(OSError):
                    console.print(f"OpenAI-compatible door: {read_door(state_dir)} "
                                  "(same dev key; see the README's 'HTTP door')")
            if demo:
                await demo_mod.run(addresses, state_dir)
            else:
                console.print(f"stack is up ({len(stack.services)} services); Ctrl-C stops it")
                await wait_for_signal()

    terminate.run(run())


def stack_table(stack: object, addresses: dict[str, str]) -> object:
    """Services, addresses, metrics ports and states of a running stack."""
    from rich.table import Table

    from cmesh.stack import probe_stack

    table = Table(title="local stack")
    for column in ("service", "address", "metrics", "state"):
        table.add_column(column)
    services = getattr(stack, "services", {})
    for name, address in addresses.items():
        running = services.get(name)
        metrics = str(running.metrics_port) if running is not None else "-"
        state = ("SERVING" if name == "nats" or name.startswith("nats-")
                 or probe_stack(address, getattr(stack, "state_dir", Path("."))) else "NOT SERVING")
        table.add_row(name, address, metrics, state)
    return table
