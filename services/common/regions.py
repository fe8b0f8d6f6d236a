"""Regions: one NATS JetStream cluster each, joined by gateways into a supercluster.

A region's name is its NATS cluster name, its gateway name and the placement of
the streams its services create (`api.Placement(cluster=region)`); streams and
subjects that exist once per region carry it (`regional_stream`,
`regional_subject`), because a supercluster has one JetStream namespace per
account: two regions cannot both own `CMESH_CACHE`, nor both capture one subject.

`Supercluster` starts N regions of one or three servers each on this machine
(tests, and the local stack later), waits until every gateway is connected and
JetStream has a meta leader, and kills a region like an outage.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from services.common.natscluster import wait_jetstream
from services.common.natsd import ClusterBlock, GatewayBlock, NatsServer, NatsUser, free_port

REGION_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
"""Lower-case letters, digits and '-': valid in cluster names, subjects and (upper-cased,
'-' as '_') stream names, and no two regions map to one stream name."""


def check_region(region: str) -> str:
    """`region` if it is a valid region name (the empty string: no region), else ValueError."""
    if region and not re.fullmatch(REGION_PATTERN, region):
        raise ValueError(f"region {region!r} must match {REGION_PATTERN}")
    return region


def check_other_regions(own: str, others: Sequence[str], name: str, why: str) -> list[str]:
    """`others` (setting `name`: regions beside the service's `own`) when each is a valid
    region, none twice and not `own`, which must be set (`why`: what it is needed for)."""
    if others and not own:
        raise ValueError(f"{name} needs region ({why})")
    if own in others:
        raise ValueError(f"{name}: the service's own region is not one of the others")
    if len(set(others)) != len(others):
        raise ValueError(f"{name}: listed twice")
    return [check_region(r) for r in others]


def regional_stream(base: str, region: str) -> str:
    """`base` for no region, else `<base>_<REGION>` ('eu-west' -> `CMESH_CACHE_EU_WEST`)."""
    return f"{base}_{check_region(region).upper().replace('-', '_')}" if region else base


def regional_subject(base: str, region: str) -> str:
    """`base` for no region, else `<base>.<region>`."""
    return f"{base}.{check_region(region)}" if region else base


class Supercluster:
    """Regions of `size` servers each: routes within a region, gateways between regions.

    Every server has JetStream (its own store under `store_dir/<region>/<i>`), a
    `server_name` unique in the supercluster (`<region>-<i>`) and a monitoring port
    (`/gatewayz`). `users` go into every server's config; `connect_options` are what
    `wait_ready` connects with (a user's credentials). `stop(region)` kills a region's
    servers like an outage; `start(region)` brings them back on their ports and stores.
    """

    def __init__(self, regions: Sequence[str] = ("a", "b"), size: int = 1,
                 store_dir: str | Path | None = None, users: Sequence[NatsUser] = (),
                 connect_options: Mapping[str, Any] | None = None) -> None:
        if len(set(regions)) != len(regions) or len(regions) < 1:
            raise ValueError("regions must be distinct and at least one")
        if size < 1:
            raise ValueError("size must be >= 1")
        for region in regions:
            check_region(region)
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cmesh-super-"))
        self.connect_options = dict(connect_options or {})
        route_ports = {r: [free_port() for _ in range(size)] for r in regions}
        gateway_ports = {r: [free_port() for _ in range(size)] for r in regions}
        gateways = {r: [f"nats://127.0.0.1:{p}" for p in ports]
                    for r, ports in gateway_ports.items()}
        self.regions: dict[str, list[NatsServer]] = {}
        for region in regions:
            routes = [f"nats://127.0.0.1:{p}" for p in route_ports[region]]
            self.regions[region] = [
                NatsServer(store_dir=self.store_dir / region / str(i), users=users,
                           server_name=f"{region}-{i}", monitor_port=free_port(),
                           cluster=ClusterBlock(region, route_ports[region][i], routes),
                           gateway=GatewayBlock(region, gateway_ports[region][i], gateways))
                for i in range(size)
            ]

    def servers(self, region: str) -> list[NatsServer]:
        """The servers of `region`."""
        return self.regions[region]

    def url(self, region: str) -> str:
        """The region's servers, comma-separated (what a service in it connects to)."""
        return ",".join(s.url for s in self.regions[region])

    async def start(self, region: str | None = None, timeout: float = 30.0) -> None:
        """Start every region (or one) and wait until the supercluster is whole."""
        chosen = self.regions.values() if region is None else [self.regions[region]]
        await asyncio.gather(*(s.start() for servers in chosen for s in servers))
        await self.wait_ready(timeout)

    async def stop(self, region: str | None = None) -> None:
        """Kill every server (or one region's) with SIGKILL."""
        chosen = self.regions.values() if region is None else [self.regions[region]]
        for servers in chosen:
            for server in servers:
                await server.stop()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running server has its gateway to every region with a running
        server, and JetStream answers account info in each such region."""
        deadline = asyncio.get_running_loop().time() + timeout
        live = [r for r, servers in self.regions.items() if any(s.running for s in servers)]
        while not all([await self._gateways_up(s, live) for r in live
                       for s in self.regions[r] if s.running]):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"gateways between {live} not connected in {timeout} s")
            await asyncio.sleep(0.1)
        for region in live:
            await self._wait_jetstream(region, deadline)

    @staticmethod
    async def _gateways_up(server: NatsServer, regions: Sequence[str]) -> bool:
        others = {r for r in regions if server.gateway and r != server.gateway.name}
        try:
            z = await asyncio.to_thread(gatewayz, server)
        except OSError:
            return False
        # Each server dials one server of every other region, and is dialled by some
        # (maybe none) of theirs: all outbound links up means every pair is connected.
        return others <= set(z.get("outbound_gateways") or {})

    async def _wait_jetstream(self, region: str, deadline: float) -> None:
        servers = [s.url for s in self.regions[region] if s.running]
        await wait_jetstream(servers, self.connect_options, deadline, f"region {region}")

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)


def gatewayz(server: NatsServer, timeout: float = 2.0) -> dict[str, Any]:
    """The server's `/gatewayz` monitoring page (blocking; OSError when unreachable)."""
    if server.monitor_port is None:
        raise ValueError("the server has no monitoring port")
    url = f"http://127.0.0.1:{server.monitor_port}/gatewayz"
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: dict[str, Any] = json.loads(reply.read())
    return body
