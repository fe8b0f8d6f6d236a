"""Restarts the local stack's services that die, the way compose's `restart:` does.

A service that exits while the stack runs is restarted on the same port (its peers
and the gateway keep their addresses) after a backoff, logged and counted; its
state comes back the way it does at any start (the cache and the broker rebuild
theirs from JetStream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:
    from cmesh.stack import RunningService

log = logging.getLogger(__name__)


def kill_group(pid: int) -> None:
    """SIGKILL whatever is left of the process group `pid` leads (a service started in
    its own session: vLLM's engine core too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Backoff:
    """The wait before a restart: `first` doubling per failed try up to `cap`; a service
    that stayed up `reset_after` seconds starts again from `first`."""

    first: float = 0.5
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2 ** min(failures, 32))


class Supervised(Protocol):
    """What the supervisor needs of a stack (`LocalStack`)."""

    @property
    def services(self) -> Mapping[str, RunningService]: ...

    async def respawn(self, name: str) -> RunningService:
        """Start `name` again on its port, wait until SERVING and record it; raises (and
        leaves nothing running) when it does not come up."""
        ...


class Supervisor:
    """One task per service of a started stack, each waiting for its process to exit;
    stop it (leave the context) before stopping the services."""

    def __init__(self, stack: Supervised, backoff: Backoff | None = None) -> None:
        self._stack = stack
        self._backoff = backoff or Backoff()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._watch(name), name=f"supervise {name}")
                       for name in self._stack.services]

    async def stop(self) -> None:
        """Cancel every watch; a restart under way is killed (`respawn` sees to it)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _watch(self, name: str) -> None:
        clock = asyncio.get_running_loop().time
        failures = 0
        while True:
            service = self._stack.services[name]
            up_since = clock()
            code = await service.proc.wait()
            kill_group(service.proc.pid)
            if clock() - up_since >= self._backoff.reset_after:
                failures = 0
            log.warning("%s exited with code %s after %.0f s (log %s)",
                        name, code, clock() - up_since, service.log_path)
            while True:
                delay = self._backoff.delay(failures)
                failures += 1
                log.warning("restarting %s in %.1f s (try %d)", name, delay, failures)
                await asyncio.sleep(delay)
                try:
                    service = await self._stack.respawn(name)
                except Exception as exc:  # a failed try waits longer; the watch goes on
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning("%s did not come back: %s (log %s)", name, first,
                                service.log_path)
                    continue
                break
            log.warning("%s restarted on %s (pid %s, %d restarts)", name, service.address,
                        service.proc.pid, service.restarts)
