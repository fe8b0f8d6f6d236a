"""The local stack: a JetStream `nats-server` and each service as a child process.

`cmesh up` uses it to run everything on one machine; services find each other
through the addresses printed here (and written to <state dir>/addresses.json).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.common.natscluster import NatsCluster
from services.common.natsd import NatsServer, free_port
from services.common.probe import probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one service of the stack."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    needs_nats: bool = False
    start_timeout: float = 900.0
    # Services that must be SERVING first; `{name}` in args becomes their address.
    needs: tuple[str, ...] = ()


def default_specs(large_model: str | None = None) -> list[ServiceSpec]:
    """backend-small (SmolLM2), backend-large (a larger local model when given,
    else SmolLM2 again), cache and classifier."""
    large = ("--model", large_model) if large_model else ()
    return [
        ServiceSpec("backend-small", "services.backend", ("--served_name", "small")),
        ServiceSpec("backend-large", "services.backend", ("--served_name", "large", *large)),
        ServiceSpec("cache", "services.cache", needs_nats=True),
        ServiceSpec("classifier", "services.classifier"),
        ServiceSpec("broker", "services.broker",
                    ("--backends", "small={backend-small};large={backend-large}"),
                    needs_nats=True, needs=("backend-small", "backend-large")),
    ]


def select_specs(specs: Sequence[ServiceSpec], wanted: set[str]) -> list[ServiceSpec]:
    """The wanted services (all when empty); the broker serves the backends chosen with it."""
    chosen = [s for s in specs if not wanted or s.name in wanted]
    names = {s.name for s in chosen}
    out = []
    for spec in chosen:
        if spec.module == "services.broker":
            tiers = [n for n in names if n.startswith("backend-")]
            if not tiers:
                raise ValueError("the broker needs at least one backend in the stack")
            backends = ";".join(f"{n.removeprefix('backend-')}={{{n}}}" for n in sorted(tiers))
            spec = replace(spec, args=("--backends", backends), needs=tuple(sorted(tiers)))
        out.append(spec)
    return out


@dataclass
class RunningService:
    spec: ServiceSpec
    proc: asyncio.subprocess.Process
    port_file: Path
    metrics_port: int
    log_path: Path
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalStack:
    """Start with `async with LocalStack(specs, state_dir) as stack:`; stops in reverse."""

    specs: Sequence[ServiceSpec]
    state_dir: Path
    services: dict[str, RunningService] = field(default_factory=dict)
    nats: NatsServer | None = None
    nats_cluster: int = 1  # >1: a clustered JetStream with replicated streams
    cluster: NatsCluster | None = None

    @property
    def nats_url(self) -> str | None:
        if self.cluster is not None:
            return self.cluster.url
        return self.nats.url if self.nats is not None else None

    async def __aenter__(self) -> LocalStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if any(s.needs_nats for s in self.specs):
                await self._start_nats()
            names = {s.name for s in self.specs}
            waves = [[s for s in self.specs if not set(s.needs) & names],
                     [s for s in self.specs if set(s.needs) & names]]
            for wave in waves:
                for spec in wave:
                    self.services[spec.name] = await self._spawn(spec)
                await asyncio.gather(*(self._wait_serving(self.services[s.name])
                                       for s in wave))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        addresses = {name: s.address for name, s in self.services.items()}
        if self.nats_url is not None:
            addresses["nats"] = self.nats_url
        (self.state_dir / "addresses.json").write_text(json.dumps(addresses, indent=2))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for service in reversed(list(self.services.values())):
            if service.proc.returncode is None:
                service.proc.send_signal(signal.SIGTERM)
        for service in self.services.values():
            try:
                await asyncio.wait_for(service.proc.wait(), 60)
            except TimeoutError:
                service.proc.kill()
                await service.proc.wait()
        self.services.clear()
        if self.nats is not None:
            await self.nats.stop()
        if self.cluster is not None:
            await self.cluster.stop()

    async def _start_nats(self) -> None:
        if self.nats_cluster > 1:
            self.cluster = NatsCluster(self.nats_cluster, self.state_dir / "jetstream-cluster")
            await self.cluster.start()
            log.info("nats-server cluster (JetStream, %d nodes) on %s", self.nats_cluster,
                     self.cluster.url)
        else:
            self.nats = NatsServer(store_dir=self.state_dir / "jetstream")
            await self.nats.start()
            log.info("nats-server (JetStream) on %s", self.nats.url)

    async def _spawn(self, spec: ServiceSpec) -> RunningService:
        port_file = self.state_dir / f"{spec.name}.port"
        port_file.unlink(missing_ok=True)
        log_path = self.state_dir / f"{spec.name}.log"
        metrics_port = free_port()
        known = {name: s.address for name, s in self.services.items()}
        args = [a.format(**known) if spec.needs else a for a in spec.args]
        args += ["--port", "0", "--port_file", str(port_file), "--metrics_port", str(metrics_port)]
        if spec.needs_nats and self.nats_url is not None:
            # the broker takes every node; other clients learn the rest from the first
            broker = spec.module == "services.broker"
            url = self.nats_url if broker else self.nats_url.split(",")[0]
            args += ["--nats_url", url]
            if broker and self.cluster is not None:
                args += ["--stream_replicas", str(min(3, self.nats_cluster))]
        with log_path.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", spec.module, *args,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
        log.info("started %s (pid %s, log %s)", spec.name, proc.pid, log_path)
        return RunningService(spec, proc, port_file, metrics_port, log_path)

    async def _wait_serving(self, service: RunningService) -> None:
        deadline = asyncio.get_running_loop().time() + service.spec.start_timeout
        while asyncio.get_running_loop().time() < deadline:
            if service.proc.returncode is not None:
                tail = service.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{service.spec.name} exited:\n{tail}")
            if service.port_file.is_file() and service.port_file.read_text().strip():
                service.port = int(service.port_file.read_text())
                if await asyncio.to_thread(probe, service.address):
                    log.info("%s SERVING on %s", service.spec.name, service.address)
                    return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{service.spec.name} not SERVING within {service.spec.start_timeout}s")

