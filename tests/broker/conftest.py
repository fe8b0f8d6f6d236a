"""Broker fixtures: a real nats-server, real broker processes, backends over real gRPC.

`scripted_backend` is the backend's own servicer over a scripted engine (no
vLLM), for the scheduling tests that need exact timing; the must-show tests
on answers use real vLLM backends (see test_broker_vllm.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from core.generation import Delta, GenerationRequest
from protos.backend.v1 import backend_pb2_grpc
from protos.broker.v1 import broker_pb2, broker_pb2_grpc
from services.backend.engine import EngineLoad
from services.backend.metrics import BackendMetrics
from services.backend.servicer import BackendServicer
from services.backend.settings import BackendSettings
from services.broker.client import BrokerClient
from services.common.natsd import NatsServer
from services.common.server import GrpcService
from tests.support import ServiceProcess, start_service


class ScriptedEngine:
    """Answers `w0 w1 ...` (max_tokens words, 8 by default, or `words` when fewer, then
    finishing "stop"), one word per `delay_s`.

    Records the order in which prompts started, and how many run now.
    """

    def __init__(self, slots: int = 4, delay_s: float = 0.02, words: int | None = None
                 ) -> None:
        self.slots, self.delay_s, self.words = slots, delay_s, words
        self.started: list[str] = []
        self.running = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.started.append(request.prompt)
        self.running += 1
        try:
            limit = request.sampling.max_tokens or 8
            n = min(limit, self.words or limit)  # `words`: a shorter answer ends "stop"
            for i in range(len(request.continue_token_ids), n):
                await asyncio.sleep(self.delay_s)
                last = i == n - 1
                finish = ("length" if n == limit else "stop") if last else None
                yield Delta(f" w{i}", [i], [], finish, 3, i + 1)
        finally:
            self.running -= 1

    def load(self) -> EngineLoad:
        return EngineLoad(self.running, self.slots, 256)

    def info(self):  # pragma: no cover - not called by the broker
        raise NotImplementedError

    async def health(self) -> None:
        return None


async def scripted_service(port: int, delay_s: float, slots: int = 4,
                           words: int | None = None) -> tuple[GrpcService, ScriptedEngine]:
    """A scripted backend on `port` that dies at once when drained (no grace), like a
    killed one; `drain()` it at the end."""
    engine = ScriptedEngine(slots=slots, delay_s=delay_s, words=words)
    servicer = BackendServicer(engine, BackendMetrics(CollectorRegistry(), "fake"))
    service = GrpcService(
        "fake-backend", BackendSettings(port=port, grace_seconds=0), service_names=[],
        register=lambda s: backend_pb2_grpc.add_BackendServicer_to_server(servicer, s))
    return await service.__aenter__(), engine


@pytest.fixture(scope="session")
async def nats_server() -> AsyncIterator[NatsServer]:
    async with NatsServer() as server:
        yield server


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(nats_server.url) as c:
        yield c


MakeBackend = Callable[..., "asyncio.Future[tuple[str, ScriptedEngine]]"]


@pytest.fixture
async def scripted_backend() -> AsyncIterator[Callable]:
    """Start scripted backends over real gRPC; returns (address, engine)."""
    services: list[GrpcService] = []

    async def make(slots: int = 4, delay_s: float = 0.02) -> tuple[str, ScriptedEngine]:
        engine = ScriptedEngine(slots, delay_s)
        servicer = BackendServicer(engine, BackendMetrics(CollectorRegistry(), "fake"))
        service = GrpcService(
            "fake-backend", BackendSettings(port=0), service_names=[],
            register=lambda s: backend_pb2_grpc.add_BackendServicer_to_server(servicer, s))
        await service.__aenter__()
        services.append(service)
        return service.address, engine

    yield make
    for service in services:
        await service.drain()


@pytest.fixture
def broker(nats_server: NatsServer) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m services.broker` processes; all stopped at the end."""
    started: list[ServiceProcess] = []

    def start(backends: str, *args: str, nats_url: str | None = None) -> ServiceProcess:
        service = start_service("services.broker", "--backends", backends,
                                "--nats_url", nats_url or nats_server.url,
                                "--load_poll_s", "0.05", *args)
        started.append(service)
        service.wait_serving(timeout=60)
        return service

    yield start
    for service in started:
        service.stop(timeout=20)


async def until(check: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until `check()` holds; fails after `within`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"{what}: not within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def holder_of_one_job(brokers: list) -> int:
    """Index of the broker running the one job in flight."""
    for _ in range(100):
        for i, b in enumerate(brokers):
            async with grpc.aio.insecure_channel(b.address) as channel:
                status = await broker_pb2_grpc.BrokerStub(channel).GetStatus(
                    broker_pb2.GetStatusRequest(), timeout=5)
            if sum(r.in_flight for r in status.replicas):
                return i
        await asyncio.sleep(0.05)
    raise AssertionError("no broker runs the job")
