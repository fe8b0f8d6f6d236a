"""`cmesh batch` against a real gateway door (fake tiers, real nats-server): submit with
--wait, status, results, and a clean error for an unknown batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmesh.cli import app
from services.common.natsd import NatsServer
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]


async def test_submit_wait_status_results(tmp_path: Path) -> None:
    key = add_key(tmp_path / "api-keys", "dev")
    lines = [json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/completions",
                         "body": {"model": "small", "prompt": f"say {i}", "max_tokens": 4}})
             for i in range(5)] + ["not json"]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    tiers = {"small": FakeTier("small"), "large": FakeTier("large")}
    async with NatsServer() as nats:
        settings = GatewaySettings(port=0, http_port=0, api_keys_file=tmp_path / "api-keys",
                                   nats_url=nats.url)
        async with GatewayNode(settings, tiers=tiers) as node:
            common = ["--base-url", node.http_base_url, "--key", key]
            runner = CliRunner()

            def cli(*args: str):  # the CLI is synchronous: run it beside the event loop
                return asyncio.to_thread(runner.invoke, app, ["batch", *args, *common])

            submitted = await cli("submit", str(tmp_path / "in.jsonl"), "--endpoint",
                                  "/v1/completions", "--wait", "--poll-s", "0.1")
            assert submitted.exit_code == 0, submitted.output
            batch_id = submitted.output.split()[0]
            assert "5 completed, 1 failed of 6" in submitted.output
            shown = await cli("status", batch_id, "--json")
            assert json.loads(shown.output)["status"] == "completed"
            out = tmp_path / "out.jsonl"
            assert (await cli("results", batch_id, "--out", str(out))).exit_code == 0
            rows = [json.loads(x) for x in out.read_text().splitlines()]
            assert sorted(r["custom_id"] for r in rows) == [f"q{i}" for i in range(5)]
            assert rows[0]["response"]["body"]["choices"][0]["text"].startswith("small: say")
            errors = await cli("results", batch_id, "--errors")
            assert "invalid_line" in errors.output
            missing = await cli("status", "batch_nope")
            assert missing.exit_code != 0 and "404" in missing.output
