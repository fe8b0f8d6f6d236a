"""A backend whose vLLM engine core dies stops saying SERVING and answers UNAVAILABLE.

Runs its own small backend (the shared session one must stay alive), kills the
engine core process under it with SIGKILL mid-stream, then checks the health
status, the stream that was running and a new call.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from tests.support import start_service

pytestmark = pytest.mark.vllm

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def engine_core(service_pid: int) -> psutil.Process:
    """The vLLM engine core child of the backend process (it renames itself EngineCore)."""
    for child in psutil.Process(service_pid).children(recursive=True):
        try:
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no EngineCore child process found")


def request(max_tokens: int) -> backend_pb2.GenerateRequest:
    msg = backend_pb2.GenerateRequest(
        prompt="Write a very long story about the sea.",
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens))
    msg.sampling_overrides.update({"ignore_eos": True})
    return msg


def test_killed_engine_turns_health_not_serving_and_calls_unavailable(
        smollm2_path: Path) -> None:
    service = start_service(
        "services.backend", "--model", str(smollm2_path), "--served_name", "doomed",
        "--max_model_len", "512", "--max_tokens_limit", "256", "--kv_cache_gib", "0.25",
        "--drain_seconds", "0", "--grace_seconds", "1")
    try:
        service.wait_serving(timeout=600)
        with grpc.insecure_channel(service.address) as channel:
            stub = backend_pb2_grpc.BackendStub(channel)
            running = stub.Generate(request(250), timeout=60)
            assert next(running).token_ids

            engine_core(service.proc.pid).kill()
            killed = time.monotonic()
            while service.health(timeout=1.0) != NOT_SERVING:
                assert time.monotonic() - killed < 2.0, "still SERVING 2 s after engine death"
                time.sleep(0.05)

            with pytest.raises(grpc.RpcError) as err:
                list(running)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.Complete(request(8), timeout=20)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert time.monotonic() - started < 5.0, "a call to a dead engine should fail fast"
            assert service.proc.poll() is None, "the service itself keeps answering"
    finally:
        service.stop()
