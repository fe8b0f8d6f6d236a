"""`cmesh ask`, `cmesh status` and `cmesh keys add`: use and inspect the running stack."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.request import urlopen

import typer

from cmesh.client import DEFAULT_STATE

keys_app = typer.Typer(help="API keys of the gateway.", no_args_is_help=True)
STATE = typer.Option(DEFAULT_STATE, "--state-dir", help="Where `cmesh up` keeps its state.")


def ask(
    prompt: str = typer.Argument(..., help="The question."),
    policy: str = typer.Option("", help="route, cascade or hybrid (default: the gateway's)."),
    force_tier: str = typer.Option("", "--force-tier", help="Send straight to this tier."),
    threshold: list[str] = typer.Option([], "--threshold", "-t",
                                        help="Override a threshold: name=value (repeatable)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    temperature: float | None = typer.Option(None),
    system: str = typer.Option("", help="System prompt."),
    skip_cache: bool = typer.Option(False, "--skip-cache"),
    no_store: bool = typer.Option(False, "--no-store"),
    address: str | None = typer.Option(None, help="Gateway host:port (default: the stack's)."),
    key: str | None = typer.Option(None, envvar="CMESH_API_KEY",
                                   help="API key (default: the stack's dev key)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw metadata as JSON."),
    state_dir: Path = STATE,
) -> None:
    """Stream an answer through the gateway, then show how it was made."""
    import grpc

    from cmesh.client import ask as ask_gateway
    from cmesh.client import build_request, metadata_dict, metadata_table, read_stack
    from cmesh.output import console

    if address is None or key is None:
        stack_address, stack_key = read_stack(state_dir)
        address, key = address or stack_address, key or stack_key
    try:
        request = build_request(prompt, policy=policy, force_tier=force_tier,
                                thresholds=threshold, max_tokens=max_tokens,
                                temperature=temperature, skip_cache=skip_cache,
                                no_store=no_store, system=system)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--threshold") from exc

    def show(text: str) -> None:
        if not as_json:
            console.print(text, end="", soft_wrap=True, highlight=False)

    try:
        text, meta = asyncio.run(ask_gateway(address, key, request, on_text=show))
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"text": text, "metadata": metadata_dict(meta)}))
    else:
        console.print()
        console.print(metadata_table(meta))


def status(state_dir: Path = STATE) -> None:
    """Health and key metrics of every service of the local stack."""
    from rich.table import Table

    from cmesh.output import console
    from cmesh.stack import REGIONS_FILE, probe_stack

    path = state_dir / "services.json"
    if not path.is_file():
        console.print(f"no stack state in {state_dir}; start one with `cmesh up`")
        raise typer.Exit(1)
    services = json.loads(path.read_text())
    table = Table(title=f"stack in {state_dir}")
    for column in ("service", "address", "health", "restarts", "key metrics"):
        table.add_column(column)
    for name, info in services.items():
        healthy = probe_stack(info["address"], state_dir, timeout=2.0)
        metrics = _key_metrics(info.get("metrics_port"))
        if healthy and name.startswith("backend-"):
            metrics = f"{_engine_line(info['address'], state_dir)}\n{metrics}"
        if healthy and name.startswith("gateway"):
            metrics = f"{tier_line(info.get('metrics_port'))}\n{metrics}"
        if healthy and name.startswith("cache"):
            metrics = f"{audit_line(info.get('metrics_port'))}\n{metrics}"
        table.add_row(name, info["address"], "SERVING" if healthy else "[red]down[/red]",
                      str(info.get("restarts", 0)), metrics)
    console.print(table)
    if (state_dir / REGIONS_FILE).is_file():
        console.print(regions_table(json.loads((state_dir / REGIONS_FILE).read_text())))


def regions_table(regions: dict[str, dict[str, object]]) -> object:
    """Each region's NATS servers and their gateway links to the other regions (from
    each server's `/gatewayz`)."""
    from rich.table import Table

    table = Table(title="regions")
    for column in ("region", "nats", "links to other regions"):
        table.add_column(column)
    for region, info in regions.items():
        links = []
        for port in info.get("monitor_ports") or []:  # type: ignore[attr-defined]
            try:
                body = json.loads(urlopen(f"http://127.0.0.1:{port}/gatewayz", timeout=2).read())
            except (OSError, ValueError):
                links.append(f"[red]server :{port} unreachable[/red]")
                continue
            out = sorted(body.get("outbound_gateways") or {})
            links.append(", ".join(f"-> {r}" for r in out) or "[red]none[/red]")
        table.add_row(region, str(info.get("nats", "")), "\n".join(links) or "-")
    return table


def _engine_line(address: str, state_dir: Path) -> str:
    """Which dtype a backend runs and why, and its start-up self-check verdict."""
    import grpc

    from cmesh.pki import stack_pki
    from protos.backend.v1 import backend_pb2, backend_pb2_grpc

    pki = stack_pki(state_dir)  # GetModelInfo is open to any mesh certificate
    channel = (grpc.secure_channel(address, pki.channel_credentials()) if pki is not None
               else grpc.insecure_channel(address))
    with channel:
        try:
            info = backend_pb2_grpc.BackendStub(channel).GetModelInfo(
                backend_pb2.GetModelInfoRequest(), timeout=2.0)
        except grpc.RpcError as err:
            return f"model info unavailable ({err.code().name})"
    return f"dtype {info.dtype} ({info.dtype_reason}); self-check {info.self_check}"


_KEY_METRICS = ("gateway_requests_total", "gateway_escalations_total", "gateway_cost_total",
                "gateway_side_call_failures_total", "cache_lookups_total", "cache_hits_total",
                "cache_index_entries", "classifier_scores_count", "backend_requests_total",
                "backend_engine_unfinished_requests", "backend_generation_tokens_total")


def scrape(port: int | None) -> str | None:
    """A service's Prometheus text, or None when it cannot be read."""
    if not port:
        return None
    try:
        return str(urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
    except (OSError, ValueError):
        return None


def samples(body: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of each sample of metric `name` in Prometheus text."""
    out = []
    for line in body.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            pairs = (part.split("=", 1) for part in labels.split('",') if "=" in part)
            out.append(({k: v.strip('"') for k, v in pairs}, float(value)))
        elif line.startswith(name + " "):  # a metric without labels
            out.append(({}, float(line.rsplit(" ", 1)[1])))
    return out


def tier_line(port: int | None) -> str:
    """Each tier as the gateway sees it (`gateway_tier_up`: through the broker)."""
    body = scrape(port)
    if body is None:
        return "tiers: metrics unreachable"
    tiers = [(labels["tier"], up) for labels, up in samples(body, "gateway_tier_up")]
    if not tiers:
        return "tiers: direct (no broker)"
    return "tiers: " + ", ".join(f"{t} {'up' if up else '[red]DOWN[/red]'}"
                                 for t, up in sorted(tiers))


def audit_line(port: int | None) -> str:
    """Each audited tenant's live wrong-hit share (90 % interval) and the δ it is held to."""
    body = scrape(port)
    if body is None:
        return "audit: metrics unreachable"
    share: dict[str, dict[str, float]] = {}
    for labels, x in samples(body, "cache_audit_wrong_share"):
        share.setdefault(labels["tenant"], {})[labels["value"]] = x
    held = {labels["tenant"]: x for labels, x in samples(body, "cache_audit_effective_delta")}
    if not share:
        return "audit: no verdicts yet"
    return "audit: " + "; ".join(
        f"{t} wrong {v.get('estimate', 0):.3f} [{v.get('low', 0):.3f}, {v.get('high', 1):.3f}]"
        f" δ {held.get(t, float('nan')):g}" for t, v in sorted(share.items()))


def _key_metrics(port: int | None) -> str:
    body = scrape(port)
    if body is None:
        return "-" if not port else "metrics unreachable"
    sums: dict[str, float] = {}
    for line in body.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _KEY_METRICS:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return ", ".join(f"{k.split('_', 1)[1]}={v:g}" for k, v in sums.items()) or "-"


@keys_app.command("add")
def keys_add(
    tenant: str = typer.Argument(..., help="Tenant the key belongs to."),
    keys_file: Path = typer.Option(..., "--file", help="The gateway's api_keys_file."),
) -> None:
    """Make a key for TENANT, append its hash to the keys file, print the key once."""
    from services.gateway.auth import add_key

    try:
        key = add_key(keys_file, tenant)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="tenant") from exc
    os.chmod(keys_file, 0o600)
    print(key)


@keys_app.command("nats")
def keys_nats(
    folder: Path = typer.Option(Path("secrets"), "--dir", help="Where the files go."),
    tiers: str = typer.Option("small,large", help="Comma-separated tiers the broker serves."),
    regions: str = typer.Option(
        "", help="Comma-separated regions (e.g. a,b): a server config per region joining "
        "them as a supercluster (nats.conf, nats-b.conf, ...) and a broker and cache user "
        "per region (compose's regions profile; docs/regions.md)."),
) -> None:
    """Write nats.conf (users, passwords, permissions) and one <service>.nats-auth per
    service (all 0600) for a NATS server run apart from `cmesh up`, e.g. compose's."""
    from cmesh.nats_users import write_mesh_users, write_region_users
    from services.common.regions import check_region

    tier_list = [t.strip() for t in tiers.split(",") if t.strip()]
    region_list = [r.strip() for r in regions.split(",") if r.strip()]
    try:
        for region in region_list:
            check_region(region)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--regions") from exc
    if len(region_list) == 1 or len(set(region_list)) != len(region_list):
        raise typer.BadParameter("two or more distinct regions", param_hint="--regions")
    paths = (write_region_users(folder, region_list, tier_list) if region_list
             else write_mesh_users(folder, tier_list))
    for name, path in paths.items():
        print(f"{name}: {path}")
