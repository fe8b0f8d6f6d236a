"""A dead part on the real stack: `cmesh up`'s defaults, one replica per tier.

SIGKILL the only small backend, or the broker, while 20 streams run: every stream
ends within seconds of the kill (UNAVAILABLE naming the tier, or completed, never
cut silently or held to its deadline), a new request for the tier is refused at
once while it is down, the gateway's health names the tier, and the supervisor
brings the service back on its port so the tier answers again with nothing else
restarted.

One stack for the module (nats-server, backend-small on vLLM, cache, classifier, broker,
gateway), as `cmesh up` starts it (`supervise=True`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cmesh.commands.gateway import tier_line
from cmesh.stack import LocalStack, RunningService, default_specs, ensure_dev_keys, select_specs
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.tier_health import tier_health_name

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(900)]
SERVICES = {"backend-small", "cache", "classifier", "broker", "gateway"}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path
                ) -> AsyncIterator[LocalStack]:
    state = tmp_path_factory.mktemp("stack")
    specs = select_specs(default_specs(keys_file=ensure_dev_keys(state)), SERVICES)
    async with LocalStack(specs, state, supervise=True) as running:
        yield running


def small_request(prompt: str = "Say hi.", max_tokens: int = 4) -> gateway_pb2.AskRequest:
    request = gateway_pb2.AskRequest(prompt=prompt, policy=gateway_pb2.PolicyOverrides(
        force_tier="small", skip_cache=True, no_store=True))
    request.sampling.max_tokens = max_tokens
    return request


def auth(stack: LocalStack) -> tuple[tuple[str, str]]:
    key = (stack.state_dir / "dev-api-key").read_text().strip()
    return (("authorization", f"Bearer {key}"),)


async def ask_small(stack: LocalStack, timeout: float) -> gateway_pb2.AskResponse:
    """One question to the small tier through the gateway, past the cache."""
    async with grpc.aio.insecure_channel(stack.services["gateway"].address) as channel:
        return await gateway_pb2_grpc.GatewayStub(channel).Ask(
            small_request(), metadata=auth(stack), timeout=timeout)


@dataclass
class Watched:
    """How one long stream of the small tier went: when each chunk came, how it ended."""

    code: str = ""
    details: str = ""
    chunks: list[float] = field(default_factory=list)  # monotonic arrival times
    end: float = 0.0

    def silent_after(self, t: float) -> float:
        """Seconds from `t` to the stream's next sign: a chunk, or its end."""
        return min([c for c in self.chunks if c > t] + [self.end]) - t


async def watch_stream(stub: gateway_pb2_grpc.GatewayStub, stack: LocalStack, i: int,
                       started: asyncio.Event) -> Watched:
    request = small_request(f"Count from 1 to 300, one number per line. ({i})", 300)
    seen = Watched()
    try:
        async for _ in stub.AskStream(request, metadata=auth(stack), timeout=120):
            seen.chunks.append(time.monotonic())
            started.set()
        seen.code = "OK"
    except grpc.aio.AioRpcError as err:
        seen.code, seen.details = err.code().name, err.details() or ""
    seen.end = time.monotonic()
    return seen


async def small_tier_health(channel: grpc.aio.Channel, want: str = "SERVING",
                            within_s: float = 3.0) -> str:
    """The small tier's status in the gateway's health, once it is `want` (or the last
    one seen after `within_s`: the gateway reports tiers every half second)."""
    give_up = time.monotonic() + within_s
    while True:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=tier_health_name("small")), timeout=5)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if status == want or time.monotonic() > give_up:
            return status
        await asyncio.sleep(0.1)


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
    async with grpc.aio.insecure_channel(stack.services["gateway"].address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        assert await small_tier_health(channel) == "SERVING"
        started = asyncio.Event()
        tasks = [asyncio.create_task(watch_stream(stub, stack, i, started)) for i in range(20)]
        await asyncio.wait_for(started.wait(), 120)
        os.killpg(before.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        streams = await asyncio.gather(*tasks)

        seen = [(s.code, s.details, round(s.silent_after(killed), 2)) for s in streams]
        assert {s.code for s in streams} <= {"OK", "UNAVAILABLE"}, seen
        assert all("'small'" in s.details for s in streams if s.code != "OK"), seen
        # each one ends, or goes on (resumed by another broker), within seconds of the kill:
        # 5 s for a backend; a lone broker's streams wait for its restart as well (tier dead
        # after 1.5 s, supervisor backoff 0.5 s, a new broker process: 5.07-5.09 s measured in
        # the full suite on two loaded cores, under 5 s alone), so 8 s there
        bound = 8.0 if victim == "broker" else 5.0
        assert max(s.silent_after(killed) for s in streams) < bound, seen
        if victim == "backend-small":  # no other replica: the running streams are cut
            assert "UNAVAILABLE" in {s.code for s in streams}, seen
        if stack.services[victim] is before:  # still down: refused at once, and reported
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Ask(small_request(), metadata=auth(stack), timeout=60)
            took = time.monotonic() - start
            if stack.services[victim] is before:
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "'small'" in (refused.value.details() or "")
                assert took < 1, took
        if victim == "backend-small":  # restarting vLLM takes long enough to look
            assert await small_tier_health(channel, "NOT_SERVING") == "NOT_SERVING"
            assert "small [red]DOWN" in tier_line(stack.services["gateway"].metrics_port)
    after = await replaced(stack, before)
    assert after.port == before.port and after.proc.pid != before.proc.pid
    answer = await answered_again(stack)
    async with grpc.aio.insecure_channel(stack.services["gateway"].address) as channel:
        assert await small_tier_health(channel) == "SERVING"
    assert "small up" in tier_line(stack.services["gateway"].metrics_port)  # cmesh status
    assert answer.metadata.tier == "small" and answer.text
    assert {name: s.proc.pid for name, s in stack.services.items() if name != victim} == others
    recorded = json.loads((stack.state_dir / "services.json").read_text())
    assert recorded[victim]["restarts"] == 1 and recorded[victim]["pid"] == after.proc.pid
    assert recorded[victim]["address"] == before.address
