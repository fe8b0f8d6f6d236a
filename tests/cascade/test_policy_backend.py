"""Cascade escalation driven by the confidence of a real SmolLM2 answer (vLLM on CPU)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from cascade.confidence import confidence
from cascade.policy import Policy
from cascade.thresholds import Thresholds
from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.common.v1 import common_pb2
from tests.support import ServiceProcess

pytestmark = pytest.mark.vllm


@dataclass
class Answer:
    text: str
    logprobs: list[float]

    @property
    def confidence(self) -> float:
        return confidence(self.logprobs)


async def generate(address: str, prompt: str) -> Answer:
    """One greedy answer from the backend, with the logprob of every token."""
    request = backend_pb2.GenerateRequest(
        prompt=prompt, chat=True, return_logprobs=True,
        sampling=common_pb2.SamplingParams(temperature=0.0, max_tokens=24, seed=0))
    text, logprobs = [], []
    async with grpc.aio.insecure_channel(address) as channel:
        async for chunk in backend_pb2_grpc.BackendStub(channel).Generate(request):
            text.append(chunk.text_delta)
            logprobs.extend(lp.logprob for lp in chunk.logprobs)
    return Answer("".join(text), logprobs)


def thresholds(cascade_small: float) -> Thresholds:
    return Thresholds(tiers=["small", "large"], thresholds={
        "route.large": 0.5, "cascade.small": cascade_small,
        "hybrid.easy": 0.3, "hybrid.hard": 0.7})


async def test_low_logprob_confidence_escalates_and_high_confidence_stays(
    smollm2_backend: ServiceProcess,
) -> None:
    real = await generate(smollm2_backend.address, "What is the capital of France?")
    assert real.text.strip() and real.logprobs, "the backend returned no tokens or logprobs"
    measured = real.confidence
    assert 0.0 < measured < 1.0

    async def answer(tier: str) -> Answer:
        # The small tier is the real SmolLM2 answer; the large tier is a stand-in.
        return real if tier == "small" else Answer("large", [0.0])

    above = Policy("cascade", thresholds(min(1.0, measured + 0.05)))
    outcome = await above.run(above.plan(None), answer)
    assert outcome.tiers_tried == ["small", "large"]
    assert outcome.tier == "large"

    below = Policy("cascade", thresholds(max(0.0, measured - 0.05)))
    outcome = await below.run(below.plan(None), answer)
    assert outcome.tiers_tried == ["small"]
    assert outcome.answer is real
