"""compose.yaml describes the same services the repo has (no Docker engine here)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support import ROOT


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def module_of(service: dict) -> str:
    return service["command"][0]


def test_every_service_runs_a_module_of_the_repo(compose) -> None:
    services = {k: v for k, v in compose["services"].items() if not k.startswith("nats")}
    assert services
    for name, service in services.items():
        module = module_of(service)
        folder = ROOT / module.replace(".", "/")
        assert (folder / "__main__.py").is_file(), f"{name}: no {module}/__main__.py"
        assert name.split("-")[0] == module.split(".")[1], f"{name} runs {module}"
        probe = service["healthcheck"]["test"]
        assert probe[:4] == ["CMD", "python", "-m", "services.common.probe"]
        port = service["command"][service["command"].index("--port") + 1]
        assert probe[4] == f"localhost:{port}"


def settings_class(module: str) -> type:
    """The settings class of `services.<name>` (found by its env prefix)."""
    import importlib

    from pydantic_settings import BaseSettings

    settings = importlib.import_module(f"{module}.settings")
    found = [c for c in vars(settings).values() if isinstance(c, type)
             and issubclass(c, BaseSettings) and c.__module__ == settings.__name__]
    assert len(found) == 1, f"{module}.settings: {found}"
    return found[0]


def test_flags_and_env_are_real_settings(compose) -> None:
    for name, service in compose["services"].items():
        if name.startswith("nats"):
            continue
        cls = settings_class(module_of(service))
        fields = set(cls.model_fields)
        prefix = cls.model_config["env_prefix"]
        flags = [a[2:] for a in service["command"] if a.startswith("--")]
        for flag in flags:
            assert flag in fields, f"{name}: --{flag} is not a setting"
        for key in service.get("environment", {}):
            if key.startswith("CMESH_") and key != "CMESH_MODELS_DIR":
                assert key.startswith(prefix), f"{name}: {key} is not {prefix}*"
                assert key[len(prefix):].lower() in fields, f"{name}: {key}"


def test_every_service_module_is_in_compose(compose) -> None:
    modules = {module_of(s) for n, s in compose["services"].items() if not n.startswith("nats")}
    for main in sorted((ROOT / "services").glob("*/__main__.py")):
        assert f"services.{main.parent.name}" in modules, f"{main.parent.name} not in compose"


def test_gateway_peers_are_the_compose_services_and_ports(compose) -> None:
    import json

    services = compose["services"]

    def port_of(name: str) -> str:
        command = services[name]["command"]
        return command[command.index("--port") + 1]

    env = services["gateway"]["environment"]
    peers = dict(json.loads(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1",
                                   env["CMESH_GATEWAY_BACKEND_ADDRESSES"])))
    peers["cache"] = env["CMESH_GATEWAY_CACHE_ADDRESS"]
    peers["classifier"] = env["CMESH_GATEWAY_CLASSIFIER_ADDRESS"]
    for tier, address in peers.items():
        host, port = address.split(":")
        assert host in services, f"gateway -> {tier}: no service {host}"
        assert port == port_of(host), f"gateway -> {tier}: {address} but {host} serves {port}"
    from cascade.thresholds import load_thresholds

    assert set(load_thresholds().tiers) <= set(peers), "a tier of the thresholds has no backend"
    command = services["gateway"]["command"]
    http = command[command.index("--http_port") + 1]
    assert services["gateway"]["ports"] == [f"{port_of('gateway')}:{port_of('gateway')}",
                                            f"{http}:{http}"]
    broker_backends = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1",
                             services["broker"]["environment"]["CMESH_BROKER_BACKENDS"])
    for part in broker_backends.split(";"):
        tier, _, address = part.partition("=")
        assert address == peers[tier], f"broker and gateway disagree on tier {tier}"


def test_gpu_large_tier_is_tensor_parallel_on_gpus(compose) -> None:
    large = compose["services"]["backend-large-gpu"]
    tp = large["environment"]["CMESH_BACKEND_TENSOR_PARALLEL_SIZE"]
    assert tp == "${CMESH_LARGE_TP:-2}"  # TP from an env var, two GPUs by default
    devices = large["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["count"] == tp and "gpu" in devices["capabilities"]
    assert large["environment"]["CMESH_BACKEND_MODEL"].startswith("/models/")


def test_nats_credentials_come_from_files_never_a_command_line(compose) -> None:
    services = compose["services"]
    nats = services["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]  # users and passwords inside
    assert "./secrets/nats.conf:/etc/nats/nats.conf:ro" in nats["volumes"]
    clients = 0
    for name, service in services.items():  # every NATS client has its own user's file
        env = service.get("environment", {})
        module = name.removesuffix("-b")
        # region b's broker and cache have users of their own; the gateways share one
        user = name if name in ("broker-b", "cache-b") else module
        server = "nats-b" if name.endswith("-b") else "nats"
        for key, value in env.items():
            if key.endswith("NATS_URL"):
                clients += 1
                assert value == f"nats://{server}:4222", f"{name}: {key} carries credentials"
                creds = env[key.replace("NATS_URL", "NATS_CREDENTIALS_FILE")]
                assert creds == f"/secrets/{module}.nats-auth"
                assert f"./secrets/{user}.nats-auth:{creds}:ro" in service["volumes"]
        assert not any("--pass" in str(a) or "PASSWORD" in str(a)
                       for a in service.get("command", [])), name
    assert clients == 6  # gateway, broker, cache in each of the two regions


def test_the_regions_profile_is_region_b_beside_the_default_services_as_a(compose) -> None:
    from services.broker.settings import BrokerSettings
    from services.cache.settings import CacheSettings
    from services.gateway.settings import GatewaySettings

    services = compose["services"]
    profile = {n for n, s in services.items() if "regions" in s.get("profiles", [])}
    assert profile == {"nats-b", "backend-small-b", "cache-b", "broker-b", "gateway-b"}
    b = {n: services[n]["environment"] for n in ("cache-b", "broker-b", "gateway-b")}
    assert b["cache-b"]["CMESH_CACHE_REGION"] == "b"
    assert b["broker-b"]["CMESH_BROKER_REGION"] == "b"
    assert (b["gateway-b"]["CMESH_GATEWAY_REGION"], b["gateway-b"]["CMESH_GATEWAY_FAILOVER_REGIONS"]
            ) == ("b", '["a"]')
    # region a: the default services, their region from the environment (unset: none)
    unset = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v)
             for n in ("cache", "broker", "gateway")
             for k, v in services[n]["environment"].items() if "REGION" in k}
    assert set(unset.values()) == {"", "[]"}
    CacheSettings(region=unset["CMESH_CACHE_REGION"], peer_regions=[])
    BrokerSettings(backends="small=x:1", region=unset["CMESH_BROKER_REGION"])
    GatewaySettings(api_keys_file="k", region="a", failover_regions=["b"])
    backends = b["broker-b"]["CMESH_BROKER_BACKENDS"]
    assert backends == "small=backend-small-b:50051;large=backend-small-b:50051"
    gateway = services["gateway-b"]
    assert "8001:8000" in gateway["ports"] and "50060:50060" in gateway["ports"]
    assert b["gateway-b"]["CMESH_GATEWAY_CACHE_ADDRESS"] == "cache-b:50053"


def test_the_region_server_configs_join_a_supercluster_with_a_user_per_region(tmp_path) -> None:
    import json

    from cmesh.nats_users import write_region_users

    paths = write_region_users(tmp_path, ["a", "b"], ["small", "large"])
    assert set(paths) == {"gateway", "broker", "cache", "broker-b", "cache-b", "nats",
                          "nats-b"}
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == 0o600
    a, b = (json.loads(paths[n].read_text()) for n in ("nats", "nats-b"))
    assert (a["cluster"]["name"], a["gateway"]["name"], b["gateway"]["name"]) == ("a", "a", "b")
    assert {g["name"]: g["urls"] for g in a["gateway"]["gateways"]} == {
        "a": ["nats://nats:7222"], "b": ["nats://nats-b:7222"]}
    assert a["server_name"] != b["server_name"]
    users = {u["user"]: u for u in a["authorization"]["users"]}
    assert users == {u["user"]: u for u in b["authorization"]["users"]}  # one account
    assert "rgen.b.small.>" in users["broker-b"]["permissions"]["publish"]["allow"]
    assert not any(s.startswith("rgen.a.") for s in
                   users["broker-b"]["permissions"]["publish"]["allow"])
