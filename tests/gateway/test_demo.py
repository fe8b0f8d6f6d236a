"""The README's demo session runs to the end through a gateway over the real mesh."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmesh.demo_gateway import run_session, script
from cmesh.stack import ensure_dev_keys
from services.gateway.main import GatewayNode
from tests.gateway.conftest import Mesh

pytestmark = [pytest.mark.vllm, pytest.mark.nats]


async def test_demo_session_runs_to_the_end(mesh: Mesh, tmp_path: Path) -> None:
    keys_file = ensure_dev_keys(tmp_path)
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o777 == 0o600
    assert ensure_dev_keys(tmp_path) == keys_file  # idempotent: keys are kept
    assert len(keys_file.read_text().splitlines()) == 2
    async with GatewayNode(mesh.settings(api_keys_file=keys_file)) as node:
        summary = await run_session(node.address, tmp_path)
    assert summary["requests"] == len(script())
    assert "Paris" in summary["first_answer"]
    assert summary["repeat_hit"]  # the same question again is answered from the cache
    assert summary["same_question_other_tenant_ms"] > 0  # the other tenant missed
    assert set(summary["tier_mix"]) == {"small", "large"}
    assert summary["escalations"] >= 1
    assert 0 < summary["cost"] < summary["cost_all_large"]
    assert summary["mean_ms"]["total"] > 0


async def test_cmesh_ask_and_status_against_the_mesh(mesh: Mesh, tmp_path: Path) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from cmesh.cli import app

    runner = CliRunner()
    async with GatewayNode(mesh.settings()) as node:
        result = await asyncio.to_thread(runner.invoke, app, [
            "ask", "--address", node.address, "--key", mesh.key, "--json", "--force-tier",
            "large", "--max-tokens", "8", "Say hello."])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output.strip().splitlines()[-1])
        assert answer["text"] and answer["metadata"]["tier"] == "large"
        assert answer["metadata"]["tiers_tried"] == ["large"]
        bad = await asyncio.to_thread(runner.invoke, app, [
            "ask", "--address", node.address, "--key", "wrong", "Say hello."])
        assert bad.exit_code == 1 and "UNAUTHENTICATED" in bad.output
    services = {name: {"address": s.address, "metrics_port": s.metrics_port}
                for name, s in (("cache", mesh.cache), ("classifier", mesh.classifier),
                                ("backend-small", mesh.small))}
    (tmp_path / "services.json").write_text(json.dumps(services))
    status = await asyncio.to_thread(runner.invoke, app, ["status", "--state-dir",
                                                          str(tmp_path)])
    assert status.exit_code == 0, status.output
    assert status.output.count("SERVING") == 3 and "requests" in status.output
    assert "float32" in status.output and "self-check" in status.output  # the backend's line
