"""Tensor parallelism (TP=2) and the health lifecycle, on a tiny random Llama."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from tests.support import start_service

pytestmark = pytest.mark.vllm

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_tp2_backend_generates_and_health_follows_its_life(tiny_llama_path) -> None:
    service = start_service(
        "services.backend", "--model", str(tiny_llama_path), "--served_name", "large",
        "--tensor_parallel_size", "2", "--cpu_threads_bind", "0|1",
        "--kv_cache_gib", "0.25", "--max_tokens_limit", "64", "--drain_seconds", "3",
        "--self_check", "false",  # random weights: warmed, not judged
    )
    try:
        seen = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and SERVING not in seen:
            assert service.proc.poll() is None, service.log_tail()
            status = service.health()
            if status is not None and (not seen or seen[-1] != status):
                seen.append(status)
            time.sleep(0.2)
        assert seen[:2] == [NOT_SERVING, SERVING], service.log_tail()

        with grpc.insecure_channel(service.address) as channel:
            stub = backend_pb2_grpc.BackendStub(channel)
            info = stub.GetModelInfo(backend_pb2.GetModelInfoRequest(), timeout=10)
            assert info.tensor_parallel_size == 2
            assert info.served_name == "large"
            request = backend_pb2.GenerateRequest(
                prompt="Hello there", return_logprobs=True,
                sampling=common_pb2.SamplingParams(temperature=0, max_tokens=12))
            request.sampling_overrides.update({"ignore_eos": True})
            reply = stub.Complete(request, timeout=60)
            assert reply.usage.completion_tokens == len(reply.token_ids) == 12

        service.proc.terminate()
        time.sleep(0.5)
        assert service.health() == NOT_SERVING
        assert service.proc.wait(60) == 0, service.log_tail()
    finally:
        service.stop()
