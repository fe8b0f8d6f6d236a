"""The backend servicer's translation and error mapping, with a fake engine (no vLLM)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from core.errors import FieldError, Overloaded
from core.generation import Delta, GenerationRequest, Sampling, TokenLogprob, Turn
from core.prefill import PrefillStats
from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from services.backend.engine import EngineInfo, _checked_extra
from services.backend.metrics import BackendMetrics
from services.backend.servicer import BackendServicer
from services.backend.settings import BackendSettings
from services.common.server import GrpcService


class FakeEngine:
    """Echoes the prompt word by word; refuses when told to."""

    def __init__(self) -> None:
        self.refuse: Exception | None = None
        self.seen: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if self.refuse is not None:
            raise self.refuse
        self.seen.append(request)
        words = request.prompt.split()
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield Delta(f"{word} ", [i], [TokenLogprob(i, word, -0.5)], "stop" if last else None,
                        len(words), i + 1)

    async def prefill(self, request: GenerationRequest, top: int = 20) -> PrefillStats:
        if self.refuse is not None:
            raise self.refuse
        self.seen.append(request)
        return PrefillStats(prompt_tokens=7, scored_tokens=5, mean_logprob=-2.5,
                            min_logprob=-6.0, next_entropy=1.25, top_mass=0.75, top=top,
                            option_mass={"A": 0.5, "B": 0.125, "C": 0.0, "D": 0.0})

    def info(self) -> EngineInfo:
        raise NotImplementedError

    async def health(self) -> None:
        return None


@pytest.fixture
async def serving():
    engine = FakeEngine()
    servicer = BackendServicer(engine, BackendMetrics(CollectorRegistry(), "t"))
    service = GrpcService(
        "t", BackendSettings(port=0), service_names=[],
        register=lambda s: backend_pb2_grpc.add_BackendServicer_to_server(servicer, s),
    )
    async with service, grpc.aio.insecure_channel(service.address) as channel:
        yield engine, channel


@pytest.fixture
def served(serving):
    engine, channel = serving
    return engine, backend_pb2_grpc.BackendStub(channel)


async def test_request_fields_reach_the_engine(served) -> None:
    engine, stub = served
    request = backend_pb2.GenerateRequest(
        prompt="a b c", return_logprobs=True,
        conversation=common_pb2.Conversation(
            system_prompt="be brief",
            turns=[common_pb2.Turn(role=common_pb2.ROLE_USER, content="hi")]),
        sampling=common_pb2.SamplingParams(temperature=0.5, top_p=0.9, max_tokens=7))
    reply = await stub.Complete(request)
    seen = engine.seen[0]
    assert reply.text == "a b c "
    assert reply.usage.completion_tokens == 3
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert seen.conversation.system_prompt == "be brief"
    assert seen.conversation.turns == (Turn("user", "hi"),)
    assert seen.sampling == Sampling(temperature=pytest.approx(0.5), top_p=pytest.approx(0.9),
                                     max_tokens=7)
    assert seen.sampling.top_k is None and seen.uses_chat_template
    assert [lp.token for lp in reply.logprobs] == ["a", "b", "c"]


@pytest.mark.parametrize(("error", "code"), [
    (Overloaded("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FieldError("prompt", "must not be empty"), grpc.StatusCode.INVALID_ARGUMENT),
])
async def test_domain_errors_map_to_status_codes(served, error, code) -> None:
    engine, stub = served
    engine.refuse = error
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Generate(backend_pb2.GenerateRequest(prompt="x")):
            pass
    assert err.value.code() == code
    engine.refuse = None
    assert (await stub.Complete(backend_pb2.GenerateRequest(prompt="x y"))).text == "x y "


async def test_prefill_carries_the_prompt_and_every_statistic(served) -> None:
    engine, stub = served
    stats = await stub.Prefill(backend_pb2.PrefillRequest(
        prompt="q", chat=True, request_id="r1",
        conversation=common_pb2.Conversation(system_prompt="s")))
    seen = engine.seen[0]
    assert (seen.prompt, seen.chat, seen.request_id) == ("q", True, "r1")
    assert seen.conversation.system_prompt == "s"
    assert (stats.prompt_tokens, stats.scored_tokens, stats.top_logprobs) == (7, 5, 20)
    assert (stats.mean_logprob, stats.min_logprob) == (-2.5, -6.0)
    assert (stats.next_entropy, stats.top_mass) == (1.25, 0.75)
    assert dict(stats.option_mass) == {"A": 0.5, "B": 0.125, "C": 0.0, "D": 0.0}
    assert (await stub.Prefill(backend_pb2.PrefillRequest(prompt="q", top_logprobs=3))
            ).top_logprobs == 3
    engine.refuse = FieldError("top_logprobs", "must be in 1..20")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Prefill(backend_pb2.PrefillRequest(prompt="q", top_logprobs=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("top_logprobs:")


def test_extra_sampling_fields_are_checked() -> None:
    assert _checked_extra({"min_tokens": 3.0, "ignore_eos": True}) == {
        "min_tokens": 3, "ignore_eos": True}
    for bad in ({"min_tokens": 2.5}, {"min_tokens": True}, {"ignore_eos": 1},
                {"repetition_penalty": "x"}, {"n": 2}, {"repetition_penalty": math.nan},
                {"min_p": math.inf}):
        with pytest.raises(FieldError) as err:
            _checked_extra(bad)
        assert err.value.field == f"sampling_overrides.{next(iter(bad))}"


async def test_nan_override_and_undecodable_bytes_are_invalid_argument(serving) -> None:
    engine, channel = serving
    stub = backend_pb2_grpc.BackendStub(channel)
    request = backend_pb2.GenerateRequest(prompt="x")
    request.sampling_overrides.update({"repetition_penalty": math.nan})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("sampling_overrides.repetition_penalty:")
    raw = backend_pb2.GenerateRequest(prompt="@@").SerializeToString().replace(b"@@", b"\xff\xfe")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/cascademesh.backend.v1.Backend/Complete")(raw)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "prompt: is not valid UTF-8"
    assert engine.seen == []


async def test_an_engine_still_loading_refuses_load_polls_and_generations() -> None:
    """The real engine wrapper before `start()` (the server answers while the model
    loads): GetLoad and Generate are UNAVAILABLE, so a broker polling the replica does
    not count it healthy and send it work it would fail."""
    from services.backend.engine import VllmEngine

    engine = VllmEngine(BackendSettings())
    servicer = BackendServicer(engine, BackendMetrics(CollectorRegistry(), "t"))
    service = GrpcService(
        "t", BackendSettings(port=0), service_names=[],
        register=lambda s: backend_pb2_grpc.add_BackendServicer_to_server(servicer, s))
    async with service, grpc.aio.insecure_channel(service.address) as channel:
        stub = backend_pb2_grpc.BackendStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as polled:
            await stub.GetLoad(backend_pb2.GetLoadRequest(), timeout=5)
        assert polled.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "loading" in (polled.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as asked:
            async for _ in stub.Generate(backend_pb2.GenerateRequest(prompt="hi"), timeout=5):
                pass
        assert asked.value.code() == grpc.StatusCode.UNAVAILABLE
