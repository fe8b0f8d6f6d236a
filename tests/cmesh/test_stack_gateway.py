"""How `cmesh up` wires the gateway into the local stack (no processes started)."""

from __future__ import annotations

import json
from pathlib import Path

from cmesh.stack import default_specs, ensure_dev_keys, select_specs
from services.gateway.auth import hash_key, load_keys


def test_gateway_starts_last_through_the_broker_with_every_peer(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    specs = {s.name: s for s in select_specs(default_specs(keys_file=keys), set())}
    gateway = specs["gateway"]
    assert set(gateway.needs) == {"backend-small", "backend-large", "cache", "classifier",
                                  "broker"}
    assert gateway.needs_nats  # tiers through the broker's queues
    addresses = {"backend-small": "127.0.0.1:1", "backend-large": "127.0.0.1:2",
                 "cache": "127.0.0.1:3", "classifier": "127.0.0.1:4", "broker": "127.0.0.1:5"}
    assert gateway.peer_args is not None
    args = list(gateway.peer_args(addresses))
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert json.loads(flags["--backend_addresses"]) == {"small": "127.0.0.1:1",
                                                        "large": "127.0.0.1:2"}
    assert flags["--cache_address"] == "127.0.0.1:3"
    assert flags["--classifier_address"] == "127.0.0.1:4"
    assert Path(flags["--api_keys_file"]) == keys
    assert flags["--http_port"] == "0"  # the OpenAI-compatible door, on a free port
    assert Path(flags["--http_port_file"]) == tmp_path / "gateway-http.port"


def test_without_the_broker_the_gateway_calls_the_backends(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    wanted = {"backend-small", "backend-large", "gateway"}
    specs = {s.name: s for s in select_specs(default_specs(keys_file=keys), wanted)}
    assert set(specs) == wanted
    assert not specs["gateway"].needs_nats
    assert set(specs["gateway"].needs) == {"backend-small", "backend-large"}


def test_dev_keys_are_kept_across_runs(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    dev = (tmp_path / "dev-api-key").read_text().strip()
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o777 == 0o600
    ensure_dev_keys(tmp_path)
    assert (tmp_path / "dev-api-key").read_text().strip() == dev
    assert load_keys(keys) == {hash_key(dev): "dev", hash_key(
        (tmp_path / "guest-api-key").read_text().strip()): "guest"}


def test_internal_services_take_mutual_tls_from_their_callers_only(tmp_path: Path) -> None:
    from cmesh.pki import ensure_mesh_pki
    from cmesh.stack import LocalStack

    def flags(wanted: set[str]) -> dict[str, dict[str, str]]:
        specs = select_specs(default_specs(keys_file=ensure_dev_keys(tmp_path)), wanted)
        stack = LocalStack(specs, tmp_path)
        stack.pki = ensure_mesh_pki(tmp_path / "tls", [s.name for s in specs])
        out = {}
        for spec in specs:
            args = stack._tls_args(spec)
            out[spec.name] = dict(zip(args[::2], args[1::2], strict=True))
        return out

    full = flags(set())
    assert json.loads(full["cache"]["--tls_allowed_callers"]) == ["gateway"]
    assert json.loads(full["classifier"]["--tls_allowed_callers"]) == ["gateway"]
    for backend in ("backend-small", "backend-large"):
        assert json.loads(full[backend]["--tls_allowed_callers"]) == ["broker", "gateway"]
        assert full[backend]["--tls_cert"].endswith(f"{backend}.pem")
    assert full["broker"]["--mesh_cert"].endswith("broker.pem")  # a client of the backends
    assert "--tls_cert" not in full["gateway"]  # its doors stay plaintext (API keys)
    assert full["gateway"]["--mesh_key"].endswith("gateway.key")
    for name, args in full.items():  # paths only, never a key on a command line
        assert all("PRIVATE KEY" not in v for v in args.values()), name
    # Without a gateway the stack's own certificate (its demo) stands in: never "anyone".
    alone = flags({"cache", "classifier"})
    assert json.loads(alone["cache"]["--tls_allowed_callers"]) == ["cmesh"]
