"""The local stack: a JetStream `nats-server` and each service as a child process.

`cmesh up` uses it to run everything on one machine; services find each other
through the addresses printed here (and written to <state dir>/addresses.json).

Secure by default: the internal services (backends, cache, classifier,
broker) listen with mutual TLS on certificates of a local CA made at first
start (`cmesh.pki`, in <state dir>/tls) and take calls only from the services
that need them (cache and classifier <- gateway, backends <- broker and
gateway, the broker's status <- gateway and the stack itself); NATS has one
user per service limited to its subjects (`cmesh.nats_users`). No password or
key is on any command line: the files they are in are 0600. The gateway's own
ports stay plaintext on 127.0.0.1 (API keys guard them); `mesh_tls=False`
turns the mesh's TLS off (benchmarks that dial internal services directly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

from cmesh.nats_users import mesh_users, region_user, region_users
from cmesh.pki import STACK_IDENTITY, MeshPki, ensure_mesh_pki, stack_pki
from cmesh.supervisor import Supervisor, kill_group
from services.common.natsauth import NatsCredentials, connect_options, write_credentials
from services.common.natscluster import NatsCluster
from services.common.natsd import NatsServer, NatsUser, free_port
from services.common.probe import probe
from services.common.regions import Supercluster

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
    # More flags from the addresses of the services started before this one.
    peer_args: Callable[[Mapping[str, str]], Sequence[str]] | None = None
    region: str = ""  # with the stack's `regions`: the region it runs in (its NATS cluster)


def default_specs(large_model: str | None = None,
                  keys_file: Path | None = None) -> list[ServiceSpec]:
    """backend-small (SmolLM2), backend-large (a larger local model when given,
    else SmolLM2 again), cache, classifier, broker, and the gateway in front of
    them (when `keys_file` names its API keys)."""
    large = ("--model", large_model) if large_model else ()
    specs = [
        ServiceSpec("backend-small", "services.backend", ("--served_name", "small")),
        ServiceSpec("backend-large", "services.backend", ("--served_name", "large", *large)),
        ServiceSpec("cache", "services.cache", needs_nats=True),
        ServiceSpec("classifier", "services.classifier"),
        ServiceSpec("broker", "services.broker",
                    ("--backends", "small={backend-small};large={backend-large}"),
                    needs_nats=True, needs=("backend-small", "backend-large")),
    ]
    if keys_file is not None:
        specs.append(gateway_spec(keys_file))
    return specs


DOOR_PORT_FILE = "gateway-http.port"  # the OpenAI-compatible door's port, in the state dir
GATEWAY_PEERS = ("backend-small", "backend-large", "cache", "classifier", "broker")


def gateway_spec(keys_file: Path, via_broker: bool = True) -> ServiceSpec:
    """The gateway, started once its peers are SERVING, pointed at their addresses, with
    its OpenAI-compatible HTTP door on a free port (written to `DOOR_PORT_FILE` beside
    the keys); `via_broker`: tiers through the broker's JetStream queues (it gets
    `--nats_url`), else straight to the backends."""

    def peers(addresses: Mapping[str, str]) -> list[str]:
        tiers = {name.removeprefix("backend-"): address for name, address in addresses.items()
                 if name.startswith("backend-")}
        args = ["--backend_addresses", json.dumps(tiers), "--api_keys_file", str(keys_file),
                "--http_port", "0", "--http_port_file", str(keys_file.parent / DOOR_PORT_FILE)]
        for flag, name in (("--cache_address", "cache"), ("--classifier_address", "classifier")):
            if name in addresses:
                args += [flag, addresses[name]]
        return args

    needs = GATEWAY_PEERS if via_broker else GATEWAY_PEERS[:-1]
    return ServiceSpec("gateway", "services.gateway", needs=needs, peer_args=peers,
                       needs_nats=via_broker, start_timeout=120.0)


REGION_NAMES = ("a", "b", "c", "d")
REGIONS_FILE = "regions.json"  # region -> its NATS URL and monitoring ports, in the state dir


def door_port_file(region: str = "") -> str:
    """Where a gateway's HTTP door port is written, in the state dir (one per region)."""
    return DOOR_PORT_FILE if not region else f"gateway-{region}-http.port"


def region_specs(regions: Sequence[str], keys_file: Path) -> list[ServiceSpec]:
    """The stack across `regions` on one machine: one classifier for all, and in each
    region `r` a SmolLM2 backend (`backend-r`, serving both tiers: two cores hold no
    more), its cache (`cache-r`, sourcing the other regions' logs), its broker
    (`broker-r`, the region's tier queues) and its gateway (`gateway-r`, failing over
    to the other regions in order, its HTTP door's port in `door_port_file(r)`)."""
    specs = [ServiceSpec("classifier", "services.classifier")]
    for region in regions:
        others = [r for r in regions if r != region]
        backend, cache, broker = f"backend-{region}", f"cache-{region}", f"broker-{region}"

        def peers(addresses: Mapping[str, str], cache: str = cache,
                  region: str = region) -> list[str]:
            return ["--api_keys_file", str(keys_file), "--http_port", "0",
                    "--http_port_file", str(keys_file.parent / door_port_file(region)),
                    "--cache_address", addresses[cache],
                    "--classifier_address", addresses["classifier"]]

        specs += [
            ServiceSpec(backend, "services.backend", ("--served_name", "small"), region=region),
            ServiceSpec(cache, "services.cache", ("--peer_regions", json.dumps(others)),
                        needs_nats=True, region=region),
            ServiceSpec(broker, "services.broker",
                        ("--backends", f"small={{{backend}}};large={{{backend}}}"),
                        needs_nats=True, needs=(backend,), region=region),
            ServiceSpec(f"gateway-{region}", "services.gateway",
                        ("--failover_regions", json.dumps(others)),
                        needs=(broker, cache, "classifier"), peer_args=peers, needs_nats=True,
                        start_timeout=120.0, region=region),
        ]
    return specs


def ensure_dev_keys(state_dir: Path, tenants: Sequence[str] = ("dev", "guest")) -> Path:
    """API keys for the local stack: `<state>/api-keys` (hashes, read by the gateway)
    and `<state>/<tenant>-api-key` (the key itself, mode 600). Existing keys are kept."""
    from services.gateway.auth import add_key, hash_key, load_keys

    keys_file = state_dir / "api-keys"
    state_dir.mkdir(parents=True, exist_ok=True)
    known = load_keys(keys_file) if keys_file.is_file() else {}
    for tenant in tenants:
        key_path = state_dir / f"{tenant}-api-key"
        if key_path.is_file() and hash_key(key_path.read_text().strip()) in known:
            continue
        key = add_key(keys_file, tenant)
        key_path.write_text(key + "\n")
        key_path.chmod(0o600)
    return keys_file


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
        if spec.module == "services.gateway":  # via the broker only when it is there
            spec = replace(spec, needs=tuple(n for n in spec.needs if n in names),
                           needs_nats="broker" in names)
        out.append(spec)
    return out


def probe_stack(address: str, state_dir: Path, timeout: float = 3.0) -> bool:
    """Whether a service of the stack in `state_dir` is SERVING: over mutual TLS with the
    stack's certificate when the stack has one, else (the gateway) in plaintext."""
    pki = stack_pki(state_dir)
    if pki is not None and probe(address, timeout=timeout,
                                 credentials=pki.channel_credentials()):
        return True
    return probe(address, timeout=timeout)


def broker_tiers(specs: Sequence[ServiceSpec]) -> list[str]:
    """Every tier a broker of `specs` serves (from its `--backends` flag)."""
    tiers: set[str] = set()
    for spec in specs:
        if spec.module == "services.broker" and "--backends" in spec.args:
            value = spec.args[spec.args.index("--backends") + 1]
            tiers |= {p.partition("=")[0].strip() for p in value.split(";") if p.strip()}
    return sorted(tiers)


@dataclass
class RunningService:
    spec: ServiceSpec
    proc: asyncio.subprocess.Process
    port_file: Path
    metrics_port: int
    log_path: Path
    port: int = 0
    restarts: int = 0  # by the supervisor (`LocalStack(supervise=True)`)

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
    mesh_tls: bool = True  # internal services on mutual TLS with the stack's own CA
    pki: MeshPki | None = None
    nats_users: dict[str, NatsUser] = field(default_factory=dict)  # by service, once started
    supervise: bool = False  # restart a service that dies (`cmesh up`), see cmesh.supervisor
    regions: Sequence[str] = ()  # a NATS server per region, joined as a supercluster
    supercluster: Supercluster | None = None
    supervisor: Supervisor | None = None

    @property
    def nats_url(self) -> str | None:
        """The NATS address(es), without credentials (those are in `nats_credentials`)."""
        if self.cluster is not None:
            return self.cluster.url
        if self.supercluster is not None:
            return self.supercluster.url(self.regions[0])
        return self.nats.public_url if self.nats is not None else None

    def nats_credentials(self, service: str) -> Path | None:
        """The credentials file of `service`'s NATS user (gateway, broker, cache)."""
        return self.state_dir / "nats" / f"{service}.nats-auth" if self.nats_users else None

    def nats_options(self, service: str) -> dict[str, object]:
        """`nats.connect` keyword arguments for a client acting as `service`."""
        return connect_options(service, self.nats_credentials(service))

    async def __aenter__(self) -> LocalStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.mesh_tls:
            self.pki = ensure_mesh_pki(self.state_dir / "tls", [s.name for s in self.specs])
        try:
            if any(s.needs_nats for s in self.specs):
                await self._start_nats()
            names = {s.name for s in self.specs}
            pending = list(self.specs)
            while pending:  # waves: each starts once what it needs is SERVING
                wave = [s for s in pending
                        if all(n in self.services or n not in names for n in s.needs)]
                if not wave:
                    raise ValueError(f"circular needs among {[s.name for s in pending]}")
                for spec in wave:
                    self.services[spec.name] = await self._spawn(spec)
                await asyncio.gather(*(self._wait_serving(self.services[s.name])
                                       for s in wave))
                pending = [s for s in pending if s not in wave]
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        addresses = {name: s.address for name, s in self.services.items()}
        if self.supercluster is not None:
            addresses |= {f"nats-{r}": self.supercluster.url(r) for r in self.regions}
            (self.state_dir / REGIONS_FILE).write_text(json.dumps(
                {r: {"nats": self.supercluster.url(r),
                     "monitor_ports": [srv.monitor_port
                                       for srv in self.supercluster.servers(r)]}
                 for r in self.regions}, indent=2))
        elif self.nats_url is not None:
            addresses["nats"] = self.nats.public_url if self.nats else self.nats_url
        (self.state_dir / "addresses.json").write_text(json.dumps(addresses, indent=2))
        self._write_services()
        if self.supervise:
            self.supervisor = Supervisor(self)
            self.supervisor.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.supervisor is not None:  # first: nothing stopped here is restarted
            await self.supervisor.stop()
            self.supervisor = None
        for service in reversed(list(self.services.values())):
            if service.proc.returncode is None:
                service.proc.send_signal(signal.SIGTERM)
        for service in self.services.values():
            try:
                await asyncio.wait_for(service.proc.wait(), 60)
            except TimeoutError:
                service.proc.kill()
                await service.proc.wait()
            kill_group(service.proc.pid)  # whatever it left behind
        self.services.clear()
        if self.nats is not None:
            await self.nats.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.supercluster is not None:
            await self.supercluster.stop()

    async def _start_nats(self) -> None:
        # One user per service, each limited to its subjects (cmesh.nats_users); across
        # regions, one per region's broker and cache. The passwords reach the server in
        # its 0600 config file and each service in its 0600 credentials file, never on a
        # command line.
        tiers = broker_tiers(self.specs)
        self.nats_users = region_users(self.regions, tiers) if self.regions else mesh_users(tiers)
        for name, user in self.nats_users.items():
            write_credentials(self.state_dir / "nats" / f"{name}.nats-auth",
                              NatsCredentials(user.user, user.password))
        if self.regions:
            self.supercluster = Supercluster(
                self.regions, store_dir=self.state_dir / "supercluster",
                users=list(self.nats_users.values()),
                connect_options=self.nats_options("broker"))
            await self.supercluster.start()
            log.info("nats-server supercluster (a user per service and region): %s",
                     ", ".join(f"{r} on {self.supercluster.url(r)}" for r in self.regions))
        elif self.nats_cluster > 1:
            self.cluster = NatsCluster(self.nats_cluster, self.state_dir / "jetstream-cluster",
                                       users=list(self.nats_users.values()),
                                       connect_options=self.nats_options("broker"))
            await self.cluster.start()
            log.info("nats-server cluster (JetStream, %d nodes, a user per service) on %s",
                     self.nats_cluster, self.cluster.url)
        else:
            self.nats = NatsServer(store_dir=self.state_dir / "jetstream",
                                   users=list(self.nats_users.values()))
            await self.nats.start()
            log.info("nats-server (JetStream, a user per service) on %s", self.nats.public_url)

    def _nats_user(self, spec: ServiceSpec) -> str:
        """The NATS user `spec` connects as (`cmesh.nats_users.region_user`)."""
        service = spec.module.removeprefix("services.")
        return region_user(service, spec.region, self.regions) if self.regions else service

    def _write_services(self) -> None:
        (self.state_dir / "services.json").write_text(json.dumps(
            {name: {"address": s.address, "metrics_port": s.metrics_port, "pid": s.proc.pid,
                    "log": str(s.log_path), "restarts": s.restarts}
             for name, s in self.services.items()}, indent=2))

    async def respawn(self, name: str) -> RunningService:
        """Start `name` again with the same flags on the same ports (its peers keep its
        address), wait until SERVING, count it in services.json; a start that fails is
        killed and raised."""
        old = self.services[name]
        service = await self._spawn(old.spec, old.port, old.metrics_port)
        try:
            await self._wait_serving(service)
        except BaseException:
            kill_group(service.proc.pid)
            await service.proc.wait()
            raise
        service.restarts = old.restarts + 1
        self.services[name] = service
        self._write_services()
        return service

    async def _spawn(self, spec: ServiceSpec, port: int = 0,
                     metrics_port: int | None = None) -> RunningService:
        port_file = self.state_dir / f"{spec.name}.port"
        port_file.unlink(missing_ok=True)
        log_path = self.state_dir / f"{spec.name}.log"
        metrics_port = metrics_port or free_port()
        known = {name: s.address for name, s in self.services.items()}
        args = [a.format(**known) if spec.needs else a for a in spec.args]
        args += ["--port", str(port), "--port_file", str(port_file),
                 "--metrics_port", str(metrics_port)]
        if spec.peer_args is not None:
            args += list(spec.peer_args(known))
        args += self._tls_args(spec)
        if spec.region:
            args += ["--region", spec.region]
        if spec.needs_nats and self.nats_url is not None:
            # the broker takes every node; other clients learn the rest from the first
            broker = spec.module == "services.broker"
            nats_url = (self.supercluster.url(spec.region)
                        if self.supercluster is not None and spec.region else self.nats_url)
            url = nats_url if broker else nats_url.split(",")[0]
            args += ["--nats_url", url]
            credentials = self.nats_credentials(self._nats_user(spec))
            if credentials is not None:
                args += ["--nats_credentials_file", str(credentials)]
            if broker and self.cluster is not None:
                args += ["--stream_replicas", str(min(3, self.nats_cluster))]
        with log_path.open("ab" if port else "wb") as out:  # a restart keeps the last words
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", spec.module, *args,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                start_new_session=True,  # its own group: a kill reaches vLLM's engine too
            )
        log.info("started %s (pid %s, log %s)", spec.name, proc.pid, log_path)
        return RunningService(spec, proc, port_file, metrics_port, log_path)

    def _callers(self, *modules: str) -> list[str]:
        return sorted(s.name for s in self.specs if s.module in modules)

    def _tls_args(self, spec: ServiceSpec) -> list[str]:
        """Mutual TLS flags of `spec`: its certificate as a server and as a client, and the
        services allowed to call it (paths only: no secret is on a command line)."""
        if self.pki is None:
            return []
        pki, name = self.pki, spec.name
        client = ["--mesh_ca", str(pki.ca), "--mesh_cert", str(pki.cert(name)),
                  "--mesh_key", str(pki.key(name))]
        # Without a gateway in the stack (`cmesh up --only ...`), the stack's own
        # certificate (its demo) stands in for one; an empty list would let in any.
        gateways = self._callers("services.gateway") or [STACK_IDENTITY]
        callers = {"services.cache": gateways, "services.classifier": gateways,
                   "services.backend": sorted({*gateways, *self._callers("services.broker")}),
                   "services.broker": sorted({*gateways, STACK_IDENTITY})}
        if spec.module == "services.gateway":
            return client
        server = ["--tls_cert", str(pki.cert(name)), "--tls_key", str(pki.key(name)),
                  "--tls_client_ca", str(pki.ca),
                  "--tls_allowed_callers", json.dumps(callers.get(spec.module, gateways))]
        return server + (client if spec.module == "services.broker" else [])

    def probe_credentials(self, spec: ServiceSpec) -> grpc.ChannelCredentials | None:
        """What the stack presents to probe `spec` (None: plaintext)."""
        if self.pki is None or spec.module == "services.gateway":
            return None
        return self.pki.channel_credentials()

    async def _wait_serving(self, service: RunningService) -> None:
        deadline = asyncio.get_running_loop().time() + service.spec.start_timeout
        while asyncio.get_running_loop().time() < deadline:
            if service.proc.returncode is not None:
                tail = service.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{service.spec.name} exited:\n{tail}")
            if service.port_file.is_file() and service.port_file.read_text().strip():
                service.port = int(service.port_file.read_text())
                credentials = self.probe_credentials(service.spec)
                if await asyncio.to_thread(probe, service.address, credentials=credentials):
                    log.info("%s SERVING on %s", service.spec.name, service.address)
                    return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{service.spec.name} not SERVING within {service.spec.start_timeout}s")

