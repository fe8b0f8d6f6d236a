"""Helpers the test suites share: run a service as a real child process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.natsd import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServiceProcess:
    """A service started with `python -m services.<name>` on free ports."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def metric(self, name: str) -> float:
        """Sum of every sample of `name` on the /metrics endpoint."""
        body = urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read()
        total, found = 0.0, False
        for line in body.decode().splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
                found = True
        if not found:
            raise KeyError(name)
        return total

    def health(self, timeout: float = 2.0) -> int | None:
        """The overall health status, or None while nothing answers."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.RpcError:
                return None
            return int(reply.status)

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.5)
        raise TimeoutError(f"service not SERVING after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the service and every process it started (a backend's vLLM engine
        core would otherwise live on as an orphan holding gigabytes)."""
        kill_group(self.proc.pid)
        self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_group(self.proc.pid)  # whatever it left behind
        return int(self.proc.returncode)


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in the group (each service leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def start_service(module: str, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
    """Start `python -m <module> --port P --metrics_port M <args>` with its log in a file."""
    port, metrics_port = free_port(), free_port()
    log_path = Path(tempfile.mkstemp(prefix=f"{module}-", suffix=".log")[1])
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port),
             "--metrics_port", str(metrics_port), *args],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(proc, port, metrics_port, log_path)


@contextlib.contextmanager
def serving(module: str, *args: str, timeout: float = 180) -> Iterator[ServiceProcess]:
    """`start_service`, serving (health) within `timeout`, stopped on the way out."""
    service = start_service(module, *args)
    try:
        service.wait_serving(timeout=timeout)
        yield service
    finally:
        service.stop()
