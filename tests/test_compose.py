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
    services = {k: v for k, v in compose["services"].items() if k != "nats"}
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


def test_flags_and_env_are_real_settings(compose) -> None:
    from services.backend.settings import BackendSettings

    fields = set(BackendSettings.model_fields)
    for name, service in compose["services"].items():
        if name == "nats":
            continue
        flags = [a[2:] for a in service["command"] if a.startswith("--")]
        for flag in flags:
            assert flag in fields, f"{name}: --{flag} is not a setting"
        if module_of(service) == "services.backend":
            for key in service["environment"]:
                match = re.fullmatch(r"CMESH_BACKEND_(\w+)", key)
                if match:
                    assert match.group(1).lower() in fields, f"{name}: {key}"


def test_gpu_large_tier_is_tensor_parallel_on_gpus(compose) -> None:
    large = compose["services"]["backend-large-gpu"]
    assert int(large["environment"]["CMESH_BACKEND_TENSOR_PARALLEL_SIZE"]) == 2
    devices = large["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["count"] == 2 and "gpu" in devices["capabilities"]
    assert large["environment"]["CMESH_BACKEND_MODEL"].startswith("/models/")


def test_cache_reaches_the_jetstream_server(compose) -> None:
    cache = compose["services"]["cache"]
    assert cache["environment"]["CMESH_CACHE_NATS_URL"] == "nats://nats:4222"
    assert "-js" in compose["services"]["nats"]["command"]
