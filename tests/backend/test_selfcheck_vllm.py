"""The start-up self-check on real vLLM: a backend never serves an answer it would refuse.

vLLM 0.32's CPU bf16 path answered with degenerate text on a CPU with native
bf16 (services/backend/dtype.py), and answered right on an AMD EPYC with
avx512_bf16 and no AMX (2026-12-04): it depends on the CPU. So the bf16 test
asserts what holds on either: the backend refuses at start-up (exit status 3,
never SERVING) or it serves and answers the France prompt with Paris. The
refusal itself is shown on every CPU by asking the check for a word the
model's answer lacks.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from services.common.node import STARTUP_CHECK_EXIT
from tests.support import ServiceProcess, start_service

pytestmark = pytest.mark.vllm
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start_small(model: Path, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
    return start_service(
        "services.backend", "--model", str(model), "--served_name", "small",
        "--max_tokens_limit", "64", "--kv_cache_gib", "0.25", "--drain_seconds", "0",
        *args, env=env)


def watch(service: ServiceProcess, until_serving: bool) -> set[int]:
    """Health statuses seen until the process exits (or, with `until_serving`, serves)."""
    seen: set[int] = set()
    deadline = time.monotonic() + 600
    while service.proc.poll() is None and time.monotonic() < deadline:
        if (status := service.health()) is not None:
            seen.add(status)
            if until_serving and status == SERVING:
                break
        time.sleep(0.2)
    return seen


def full_log(service: ServiceProcess) -> str:
    return service.log_path.read_text(errors="replace")


def test_a_failed_check_exits_without_ever_serving(smollm2_path: Path) -> None:
    service = start_small(smollm2_path, "--self_check_expect", "Berlin")
    try:
        seen = watch(service, until_serving=False)
        assert service.proc.returncode == STARTUP_CHECK_EXIT, service.log_tail()
        assert SERVING not in seen and NOT_SERVING in seen
        log = full_log(service)
        assert "start-up self-check failed, refusing to serve" in log
        assert "the answer does not mention 'Berlin'" in log and "Paris" in log
    finally:
        service.stop()


def test_bf16_is_either_refused_or_right(smollm2_path: Path) -> None:
    service = start_small(smollm2_path, env={"CMESH_BACKEND_DTYPE": "bfloat16"})
    try:
        seen = watch(service, until_serving=True)
        if service.proc.poll() is not None:  # refused: the degenerate CPU path
            assert service.proc.returncode == STARTUP_CHECK_EXIT, service.log_tail()
            assert SERVING not in seen
            assert "refusing to serve" in full_log(service)
            return
        with grpc.insecure_channel(service.address) as channel:
            stub = backend_pb2_grpc.BackendStub(channel)
            info = stub.GetModelInfo(backend_pb2.GetModelInfoRequest(), timeout=10)
            reply = stub.Complete(backend_pb2.GenerateRequest(
                prompt="What is the capital of France?", chat=True,
                sampling=common_pb2.SamplingParams(temperature=0, max_tokens=40)), timeout=120)
        assert info.dtype == "bfloat16"
        assert info.dtype_reason == "bfloat16: set by the operator"
        assert info.self_check.startswith("passed: ")
        assert "Paris" in reply.text
    finally:
        service.stop()
