"""The real mesh for end-to-end gateway tests, once per session: nats-server with
JetStream, the cache (on JetStream), the classifier, a small and a large vLLM
backend (both SmolLM2 on this CPU), and a gateway in this process."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.natsd import NatsServer
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.otlp import SpanCollector
from tests.support import ServiceProcess, start_service


@dataclass
class Mesh:
    nats: NatsServer
    cache: ServiceProcess
    classifier: ServiceProcess
    small: ServiceProcess
    large: ServiceProcess
    keys_file: Path
    key: str
    other_key: str
    spans: SpanCollector
    broker: ServiceProcess

    def settings(self, **overrides: object) -> GatewaySettings:
        """Gateway settings pointing at this mesh (override any field)."""
        values: dict[str, object] = {
            "port": 0, "api_keys_file": self.keys_file, "cache_address": self.cache.address,
            "classifier_address": self.classifier.address,
            "backend_addresses": {"small": self.small.address, "large": self.large.address},
            "default_max_tokens": 32, "rate_limit_per_s": 200, "rate_limit_burst": 400,
            # Past these a side call counts as a miss; tests assert hits and misses, so a
            # loaded machine gets room (a 2 s lookup timed out at load average 28).
            "cache_timeout_ms": 10_000, "classifier_timeout_ms": 10_000}
        values.update(overrides)
        return GatewaySettings(**values)  # type: ignore[arg-type]

    def backend_requests(self) -> float:
        """Finished generations over both tiers (the backends' own counters)."""
        return sum(metric_or_zero(b, "backend_requests_total") for b in (self.small, self.large))


def metric_or_zero(service: ServiceProcess, name: str) -> float:
    try:
        return service.metric(name)
    except KeyError:
        return 0.0


@pytest.fixture(scope="session")
async def spans() -> AsyncIterator[SpanCollector]:
    """Where every mesh service sends its OpenTelemetry spans (OTLP, kept in memory)."""
    async with SpanCollector() as collector:
        yield collector


@contextlib.asynccontextmanager
async def running_mesh(keys_dir: Path, model: Path, spans: SpanCollector,
                       engines: int = 2) -> AsyncIterator[Mesh]:
    """The mesh's services as child processes; `engines` 1 serves both tiers from one
    vLLM engine (half the CPU and memory, for suites that need real tiers, not two)."""
    keys_file = keys_dir / "api-keys"
    key, other_key = add_key(keys_file, "acme"), add_key(keys_file, "globex")
    traced = ("--otlp_endpoint", spans.endpoint)
    backends = [start_service("services.backend", "--model", str(model),
                              "--served_name", tier, "--max_tokens_limit", "512",
                              "--drain_seconds", "0", *traced)
                for tier in ("small", "large")[:engines]]
    small, large = backends[0], backends[-1]
    async with NatsServer() as nats:
        cache = start_service("services.cache", "--nats_url", nats.url, *traced)
        classifier = start_service("services.classifier", *traced)
        broker = start_service(
            "services.broker", "--nats_url", nats.url, "--load_poll_s", "0.05",
            "--backends", f"small={small.address};large={large.address}", *traced)
        started = [*backends, cache, classifier, broker]
        mesh: Mesh | None = None
        try:
            for service in started:
                service.wait_serving(timeout=600)
            mesh = Mesh(nats, cache, classifier, small, large, keys_file,
                        key, other_key, spans, broker)
            yield mesh
        finally:
            if mesh is not None and mesh.broker not in started:
                started.append(mesh.broker)  # a test replaced the broker it killed
            for service in started:  # all at once: engines take seconds to shut down
                if service.proc.poll() is None:
                    service.proc.send_signal(signal.SIGTERM)
            for service in started:
                service.stop()


@pytest.fixture(scope="session")
async def mesh(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path,
               spans: SpanCollector) -> AsyncIterator[Mesh]:
    """Both tiers are SmolLM2 engines (no bigger model fits here), started with the
    other services at once; every service exports its traces to `spans`."""
    async with running_mesh(tmp_path_factory.mktemp("gateway"), smollm2_path, spans) as m:
        yield m


@pytest.fixture(scope="session")
async def lean_mesh(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path,
                    spans: SpanCollector) -> AsyncIterator[Mesh]:
    """The same mesh with one SmolLM2 engine behind both tiers."""
    async with running_mesh(tmp_path_factory.mktemp("lean"), smollm2_path, spans,
                            engines=1) as m:
        yield m


@pytest.fixture(scope="session")
async def gateway(mesh: Mesh) -> AsyncIterator[GatewayNode]:
    async with GatewayNode(mesh.settings()) as node:
        yield node
