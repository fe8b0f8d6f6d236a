"""`cmesh up`'s supervisor on the real stack: a killed backend or broker comes back on its
port and the tier answers through the gateway again, nothing else restarted.

One stack for the module (nats-server, backend-small on vLLM, cache, classifier, broker,
gateway), as `cmesh up` starts it (`supervise=True`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cmesh.stack import LocalStack, RunningService, default_specs, ensure_dev_keys, select_specs
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(900)]
SERVICES = {"backend-small", "cache", "classifier", "broker", "gateway"}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path
                ) -> AsyncIterator[LocalStack]:
    state = tmp_path_factory.mktemp("stack")
    specs = select_specs(default_specs(keys_file=ensure_dev_keys(state)), SERVICES)
    async with LocalStack(specs, state, supervise=True) as running:
        yield running


async def ask_small(stack: LocalStack, timeout: float) -> gateway_pb2.AskResponse:
    """One question to the small tier through the gateway, past the cache."""
    key = (stack.state_dir / "dev-api-key").read_text().strip()
    request = gateway_pb2.AskRequest(prompt="Say hi.", policy=gateway_pb2.PolicyOverrides(
        force_tier="small", skip_cache=True, no_store=True))
    request.sampling.max_tokens = 4
    async with grpc.aio.insecure_channel(stack.services["gateway"].address) as channel:
        return await gateway_pb2_grpc.GatewayStub(channel).Ask(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=timeout)


async def answered_again(stack: LocalStack, within: float = 180.0) -> gateway_pb2.AskResponse:
    async with asyncio.timeout(within):
        while True:
            try:
                return await ask_small(stack, timeout=60)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1.0)


async def replaced(stack: LocalStack, before: RunningService) -> RunningService:
    async with asyncio.timeout(before.spec.start_timeout):
        while stack.services[before.spec.name] is before:
            await asyncio.sleep(0.5)
    return stack.services[before.spec.name]


@pytest.mark.parametrize("victim", ["backend-small", "broker"])
async def test_a_killed_service_is_restarted_on_its_port_and_the_tier_answers_again(
        stack: LocalStack, victim: str) -> None:
    assert (await ask_small(stack, timeout=300)).metadata.tier == "small"
    before = stack.services[victim]
    others = {name: s.proc.pid for name, s in stack.services.items() if name != victim}
    os.killpg(before.proc.pid, signal.SIGKILL)
    after = await replaced(stack, before)
    assert after.port == before.port and after.proc.pid != before.proc.pid
    answer = await answered_again(stack)
    assert answer.metadata.tier == "small" and answer.text
    assert {name: s.proc.pid for name, s in stack.services.items() if name != victim} == others
    recorded = json.loads((stack.state_dir / "services.json").read_text())
    assert recorded[victim]["restarts"] == 1 and recorded[victim]["pid"] == after.proc.pid
    assert recorded[victim]["address"] == before.address
