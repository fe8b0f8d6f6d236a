"""The classifier service over real gRPC (port 0) with the real MiniLM embedder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.embedder import Embedder
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from protos.common.v1 import common_pb2
from services.classifier.main import SERVICE_NAME, ClassifierNode
from services.classifier.settings import ClassifierSettings

EASY = "What is the capital of France?"
HARD = ("A train leaves at 3:15 pm travelling 84 km/h; a second leaves the same station at "
        "4:05 pm at 112 km/h. At what time, to the minute, does the second catch the first, "
        "and how far from the station are they?")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
async def node(embedder: Embedder) -> AsyncIterator[ClassifierNode]:
    settings = ClassifierSettings(port=0, max_prompts=64, max_prompt_chars=500, max_wait_ms=5)
    async with ClassifierNode(settings, embedder=embedder) as running:
        yield running


@pytest.fixture
async def stub(node: ClassifierNode) -> AsyncIterator[classifier_pb2_grpc.ClassifierStub]:
    async with grpc.aio.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield classifier_pb2_grpc.ClassifierStub(channel)


async def test_scores_match_the_library_classifier(
    stub: classifier_pb2_grpc.ClassifierStub, node: ClassifierNode
) -> None:
    reply = await stub.Score(classifier_pb2.ScoreRequest(prompts=[EASY, HARD]))
    assert len(reply.scores) == 2
    assert all(0.0 <= s <= 1.0 for s in reply.scores)
    assert reply.classifier == "length-backbone"  # the shipped default
    assert reply.version
    assert node.classifier is not None
    expected = node.classifier.score([EASY, HARD])
    np.testing.assert_allclose(reply.scores, expected, atol=1e-5)
    assert reply.scores[1] > reply.scores[0]


async def test_concurrent_calls_are_micro_batched(
    stub: classifier_pb2_grpc.ClassifierStub, node: ClassifierNode
) -> None:
    assert node.service is not None
    registry = node.service.registry
    before = registry.get_sample_value("classifier_batch_size_count") or 0.0
    prompts = [f"Question {i}: what is {i} times {i + 3}?" for i in range(24)]
    replies = await asyncio.gather(
        *(stub.Score(classifier_pb2.ScoreRequest(prompts=[p])) for p in prompts))
    assert [len(r.scores) for r in replies] == [1] * 24
    batches = (registry.get_sample_value("classifier_batch_size_count") or 0.0) - before
    assert 1 <= batches < 24
    assert (registry.get_sample_value("classifier_scores_count") or 0.0) >= 24
    assert (registry.get_sample_value("classifier_score_seconds_count") or 0.0) >= 24


async def test_conversation_context_is_scored_with_the_prompt(
    stub: classifier_pb2_grpc.ClassifierStub, node: ClassifierNode
) -> None:
    conversation = common_pb2.Conversation(turns=[
        common_pb2.Turn(role=common_pb2.ROLE_USER, content=HARD),
        common_pb2.Turn(role=common_pb2.ROLE_ASSISTANT, content="At 6:32 pm."),
    ])
    reply = await stub.Score(
        classifier_pb2.ScoreRequest(prompts=["And if it left at 5 pm?"], conversation=conversation))
    assert node.classifier is not None
    expected = node.classifier.score([HARD + "\nAnd if it left at 5 pm?"])
    np.testing.assert_allclose(reply.scores, expected, atol=1e-5)


@pytest.mark.parametrize(("prompts", "field"), [
    ([], "prompts"),
    ([EASY, "  "], "prompts[1]"),
    (["x" * 501], "prompts[0]"),
    ([EASY] * 65, "prompts"),
])
async def test_bad_requests_are_invalid_argument_naming_the_field(
    stub: classifier_pb2_grpc.ClassifierStub, prompts: list[str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(classifier_pb2.ScoreRequest(prompts=prompts))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}:")


@pytest.mark.slow  # starts the service as a process
def test_runs_as_a_process_with_metrics_and_stops_on_sigterm() -> None:
    from tests.support import start_service

    service = start_service("services.classifier")
    try:
        service.wait_serving(timeout=120)
        with grpc.insecure_channel(service.address) as channel:
            reply = classifier_pb2_grpc.ClassifierStub(channel).Score(
                classifier_pb2.ScoreRequest(prompts=[EASY]), timeout=30)
        assert len(reply.scores) == 1
        assert service.metric("classifier_batch_size_count") >= 1
    finally:
        assert service.stop() == 0, service.log_tail()
