"""uvicorn inside the gateway process, as one async context manager the node enters
after warm-up and leaves (draining) before the gRPC server stops.

The socket is bound here, before uvicorn starts, so a taken port is an OSError
at start-up (uvicorn itself would `sys.exit` inside a task) and port 0 is
known at once. Signals stay with the node (`services.common.node.serve`):
uvicorn's own handlers would replace the node's and stop only the door.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import uvicorn

log = logging.getLogger(__name__)


class _NodeOwnsSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serve an ASGI `app` on host:port (0 = a free port) until the block is left;
    leaving stops accepting, then gives open requests `grace_s` to finish. An idle
    keep-alive connection stays open `keep_alive_s`."""

    def __init__(self, app: Any, host: str, port: int, grace_s: float = 5.0,
                 keep_alive_s: float = 75.0,
                 tls_cert: Path | None = None, tls_key: Path | None = None,
                 port_file: Path | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls_cert is not None
        self.port_file = port_file
        self._config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off",
            server_header=False, timeout_graceful_shutdown=max(1, round(grace_s)),
            timeout_keep_alive=max(1, round(keep_alive_s)),
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None)
        self._server = _NodeOwnsSignals(self._config)
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        """Where OpenAI clients point (`base_url=`), with the /v1 prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/v1"

    async def __aenter__(self) -> Self:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="http-door")
        async with asyncio.timeout(30):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # raises what stopped it
                    raise RuntimeError("the HTTP door stopped during start-up")
                await asyncio.sleep(0.01)
        if self.port_file is not None:
            self.port_file.write_text(f"{self.port}\n")
        log.info("HTTP door on %s", self.base_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        log.info("HTTP door stopped")
