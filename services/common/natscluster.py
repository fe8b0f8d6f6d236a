"""A JetStream cluster of `nats-server` processes on this machine (tests, `cmesh up`).

Three nodes give replicated streams (R3) that survive losing any one node;
`stop(i)` kills node i like a crash and `start(i)` brings it back with its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from services.common.natsd import NatsServer, NatsUser, free_port


class NatsCluster:
    """`size` clustered JetStream servers, routes between all of them."""

    def __init__(self, size: int = 3, store_dir: str | Path | None = None,
                 name: str = "cmesh", users: Sequence[NatsUser] = (),
                 connect_options: Mapping[str, Any] | None = None) -> None:
        """`users` go into every node's config file; `connect_options` (a user's
        credentials) are what `wait_ready` connects with."""
        if size < 1:
            raise ValueError("size must be >= 1")
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cmesh-natsc-"))
        route_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.connect_options = dict(connect_options or {})
        self.nodes = [
            NatsServer(store_dir=self.store_dir / f"n{i}", users=users, extra_args=[
                "-n", f"{name}-{i}", "--cluster_name", name,
                "--cluster", f"nats://127.0.0.1:{route_ports[i]}", "--routes", routes,
            ])
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All nodes, comma-separated (what `--nats_url` settings take)."""
        return ",".join(self.urls)

    async def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until JetStream has a meta leader."""
        await asyncio.gather(*(n.start() for n in self.nodes))
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        await wait_jetstream([n.url for n in self.nodes if n.running], self.connect_options,
                             deadline, "JetStream cluster")

    async def stop(self, index: int | None = None) -> None:
        """Kill one node (like a crash), or all of them."""
        for node in self.nodes if index is None else [self.nodes[index]]:
            await node.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)


async def wait_jetstream(servers: Sequence[str], connect_options: Mapping[str, Any],
                         deadline: float, what: str) -> None:
    """Until JetStream answers through `servers` (it has a meta leader), or TimeoutError
    naming `what` past `deadline` (event-loop time)."""
    import nats

    nc = await nats.connect(servers=list(servers), **connect_options)
    try:
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{what} has no JetStream meta leader") from None
                await asyncio.sleep(0.2)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
