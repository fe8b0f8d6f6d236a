"""The supervisor of `LocalStack(supervise=True)`: a service that dies comes back on its
address after a backoff and is counted; a failed restart is tried again; stopping the
stack restarts nothing. Over a cheap real service (the classifier with its `length`
scorer: no model, no vLLM, no nats-server)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from cmesh.stack import LocalStack, RunningService, ServiceSpec, probe_stack
from cmesh.supervisor import Backoff, Supervisor

pytestmark = pytest.mark.timeout(120)
CLASSIFIER = ServiceSpec("classifier", "services.classifier", ("--classifier", "length"),
                         start_timeout=60.0)


def test_the_backoff_doubles_from_half_a_second_to_thirty() -> None:
    delays = [Backoff().delay(n) for n in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 30.0 and max(delays) == 30.0
    assert Backoff().delay(10_000) == 30.0


async def restarted(stack: LocalStack, before: RunningService,
                    timeout: float = 60.0) -> RunningService:
    """The service that replaced `before`, once SERVING (the supervisor swaps it in then)."""
    async with asyncio.timeout(timeout):
        while stack.services[before.spec.name] is before:
            await asyncio.sleep(0.1)
    return stack.services[before.spec.name]


def processes_under(folder: Path) -> list[int]:
    """Pids whose command line names `folder` (the stack's port and log files are there)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return pids


async def test_a_killed_service_comes_back_on_its_address_counted_and_shutdown_restarts_none(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cmesh.supervisor")
    async with LocalStack([CLASSIFIER], tmp_path, supervise=True) as stack:
        first = stack.services["classifier"]
        for count in (1, 2):
            before = stack.services["classifier"]
            os.killpg(before.proc.pid, signal.SIGKILL)
            after = await restarted(stack, before)
            assert after.address == first.address and after.proc.pid != before.proc.pid
            assert after.metrics_port == first.metrics_port
            assert probe_stack(after.address, tmp_path)
            recorded = json.loads((tmp_path / "services.json").read_text())["classifier"]
            assert recorded["restarts"] == after.restarts == count
            assert recorded["pid"] == after.proc.pid
        log = first.log_path.read_text(errors="replace")
        assert log.count("classifier serving on") == 3  # a restart appends to the log
        waits = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
        assert waits == ["restarting classifier in 0.5 s (try 1)",
                         "restarting classifier in 1.0 s (try 2)"]  # up < 60 s: no reset
        assert "exited with code -9" in caplog.text
        last = stack.services["classifier"]
    assert stack.supervisor is None and last.proc.returncode is not None
    await asyncio.sleep(2 * Backoff().delay(0) + 1.0)
    assert processes_under(tmp_path) == []


async def test_a_restart_that_fails_is_tried_again_with_a_longer_wait() -> None:
    async def spawn(*argv: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(*argv, start_new_session=True)

    class Stack:
        def __init__(self, service: RunningService) -> None:
            self.services = {"svc": service}
            self.tries: list[float] = []

        async def respawn(self, name: str) -> RunningService:
            self.tries.append(asyncio.get_running_loop().time())
            if len(self.tries) == 1:
                raise RuntimeError("svc exited:\nboom")
            old = self.services[name]
            self.services[name] = RunningService(old.spec, await spawn("sleep", "60"),
                                                 old.port_file, 0, old.log_path, restarts=1)
            return self.services[name]

    dies = await spawn("true")
    stack = Stack(RunningService(ServiceSpec("svc", "none"), dies, Path("p"), 0, Path("l")))
    try:
        async with Supervisor(stack, Backoff(first=0.2, cap=1.0)):
            async with asyncio.timeout(10):
                while stack.services["svc"].restarts == 0:
                    await asyncio.sleep(0.05)
        assert len(stack.tries) == 2
        assert stack.tries[1] - stack.tries[0] >= 0.4  # the second try waited twice as long
    finally:
        stack.services["svc"].proc.kill()
        await stack.services["svc"].proc.wait()
