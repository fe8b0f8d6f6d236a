"""The backend over gRPC with a real vLLM SmolLM2 engine on the CPU."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import struct_pb2

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from tests.support import ServiceProcess

pytestmark = pytest.mark.vllm

CAPITAL = "What is the capital of France?"


@pytest.fixture(scope="module")
def stub(smollm2_backend: ServiceProcess):
    with grpc.insecure_channel(smollm2_backend.address) as channel:
        yield backend_pb2_grpc.BackendStub(channel)


def greedy(prompt: str, max_tokens: int = 40, **kw) -> backend_pb2.GenerateRequest:
    return backend_pb2.GenerateRequest(
        prompt=prompt, chat=True, return_logprobs=True,
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens), **kw,
    )


def test_greedy_answer_streams_to_the_unary_text(stub) -> None:
    chunks = list(stub.Generate(greedy(CAPITAL), timeout=120))
    unary = stub.Complete(greedy(CAPITAL), timeout=120)

    streamed = "".join(c.text_delta for c in chunks)
    assert "Paris" in unary.text
    assert streamed == unary.text
    last = chunks[-1]
    assert last.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    assert all(c.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])


def test_logprobs_and_token_counts_are_consistent(stub) -> None:
    chunks = list(stub.Generate(greedy(CAPITAL), timeout=120))
    token_ids = [t for c in chunks for t in c.token_ids]
    logprobs = [lp for c in chunks for lp in c.logprobs]
    usage = chunks[-1].usage

    assert usage.prompt_tokens > 5
    assert usage.completion_tokens == len(token_ids) == len(logprobs) > 0
    assert [lp.token_id for lp in logprobs] == token_ids
    assert all(lp.logprob <= 0.0 for lp in logprobs)
    assert "".join(lp.token for lp in logprobs).strip()


def test_model_info_reports_the_engine(stub, smollm2_path) -> None:
    info = stub.GetModelInfo(backend_pb2.GetModelInfoRequest(), timeout=10)
    assert info.model == str(smollm2_path)
    assert info.served_name == "small"
    assert info.tensor_parallel_size == 1
    assert info.max_model_len == 2048
    assert info.max_tokens_limit == 512
    assert info.enable_prefix_caching


@pytest.mark.parametrize(("sampling", "overrides", "field"), [
    ({"temperature": 5.0}, {}, "sampling.temperature"),
    ({"stop": [""]}, {}, "sampling.stop"),
    ({}, {"presence_penalty": 3.0}, "sampling_overrides.presence_penalty"),  # vLLM's own check
])
def test_what_vllm_refuses_is_invalid_argument_naming_the_field(
        stub, sampling: dict, overrides: dict, field: str) -> None:
    request = greedy(CAPITAL, sampling_overrides=struct_pb2.Struct())
    for key, value in sampling.items():
        if key == "stop":
            request.sampling.stop.extend(value)
        else:
            setattr(request.sampling, key, value)
    request.sampling_overrides.update(overrides)
    with pytest.raises(grpc.RpcError) as err:
        stub.Complete(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:"), err.value.details()


def test_auto_dtype_is_float32_on_cpu_and_says_why(stub) -> None:
    """Whatever this CPU's flags, `auto` gives float32 here, and the warm-up answer passed."""
    info = stub.GetModelInfo(backend_pb2.GetModelInfoRequest(), timeout=10)
    assert info.dtype == "float32"
    assert info.dtype_reason.startswith("auto on CPU -> float32: ")
    assert info.self_check.startswith("passed: ") and "Paris" in info.self_check


def long_request() -> backend_pb2.GenerateRequest:
    overrides = struct_pb2.Struct()
    overrides.update({"ignore_eos": True})
    return greedy("Write a very long story about the sea.", max_tokens=500,
                  sampling_overrides=overrides)


def wait_engine_idle(service: ServiceProcess, within: float) -> float:
    """Seconds until the engine tracks no request; fails after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if service.metric("backend_engine_unfinished_requests") == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"engine still has unfinished requests after {within}s")


def test_cancelled_stream_is_aborted_in_the_engine(stub, smollm2_backend) -> None:
    call = stub.Generate(long_request(), timeout=120)
    received = [next(call) for _ in range(3)]
    assert smollm2_backend.metric("backend_engine_unfinished_requests") == 1
    call.cancel()
    assert all(c.token_ids for c in received)
    wait_engine_idle(smollm2_backend, within=1.0)


def test_expired_deadline_aborts_in_the_engine(stub, smollm2_backend) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(long_request(), timeout=1.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_engine_idle(smollm2_backend, within=1.0)


def bad(field: str, **changes) -> tuple[str, backend_pb2.GenerateRequest]:
    request = greedy(CAPITAL, max_tokens=8)
    for path, value in changes.items():
        target = request.sampling if path in ("max_tokens", "temperature", "top_p") else request
        if path == "overrides":
            request.sampling_overrides.update(value)
        else:
            setattr(target, path, value)
    return field, request


BAD_INPUTS = [
    bad("prompt", prompt=""),
    bad("prompt", prompt="   "),
    bad("prompt", prompt="word " * 3000),
    bad("sampling.max_tokens", max_tokens=0),
    bad("sampling.max_tokens", max_tokens=-3),
    bad("sampling.max_tokens", max_tokens=513),
    bad("sampling.temperature", temperature=-0.5),
    bad("sampling.top_p", top_p=0.0),
    bad("sampling.top_p", top_p=1.5),
    bad("sampling_overrides.beam_width", overrides={"beam_width": 4}),
    bad("sampling_overrides.min_tokens", overrides={"min_tokens": "many"}),
]


@pytest.mark.parametrize(("field", "request_"), BAD_INPUTS, ids=[f for f, _ in BAD_INPUTS])
@pytest.mark.parametrize("rpc", ["Generate", "Complete"])
def test_bad_input_names_the_field_and_service_keeps_serving(stub, field, request_, rpc) -> None:
    with pytest.raises(grpc.RpcError) as err:
        result = getattr(stub, rpc)(request_, timeout=30)
        if rpc == "Generate":
            list(result)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()

    good = stub.Complete(greedy(CAPITAL, max_tokens=8), timeout=60)
    assert good.usage.completion_tokens > 0


def test_reflection_lists_the_backend_and_health(smollm2_backend) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(smollm2_backend.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"cascademesh.backend.v1.Backend", "grpc.health.v1.Health"} <= services
