"""The start-up self-check: degenerate warm-up answers are caught and the node never serves.

A scripted engine stands in for vLLM here (the class under test is the check);
tests/backend/test_backend_service.py runs it on real vLLM, in bf16 where the
CPU has native bf16.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import StartupCheckFailed
from core.generation import Delta, GenerationRequest
from services.backend.selfcheck import SelfCheck, degeneracy, run_self_check
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings
from services.common.node import STARTUP_CHECK_EXIT, run_service

CHECK = SelfCheck("What is the capital of France? Answer in one sentence.", "Paris", 48)
# The answer vLLM 0.32's CPU bf16 path gave on an AVX512-BF16 machine, cut at max_tokens.
BF16_GARBAGE = ("L'Étoile, la Marseillaise, la femme, la femme au martyre, la femme, "
                "la femme au martyre, la femme, la femme au martyre")


class Scripted:
    """Streams a fixed answer word by word, one token id per word, then a finish reason."""

    def __init__(self, text: str, finish: str = "stop") -> None:
        self.words = text.split(" ")
        self.finish = finish
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        vocab: dict[str, int] = {}
        for i, word in enumerate(self.words):
            last = i == len(self.words) - 1
            yield Delta(text=word if i == 0 else " " + word,
                        token_ids=[vocab.setdefault(word, len(vocab))], logprobs=[],
                        finish_reason=self.finish if last else None,
                        prompt_tokens=12, completion_tokens=i + 1)


def ids(text: str) -> Sequence[int]:
    vocab: dict[str, int] = {}
    return [vocab.setdefault(w, len(vocab)) for w in text.split()]


def test_a_sane_answer_passes() -> None:
    assert degeneracy("The capital of France is Paris.", ids("The capital of France is Paris."),
                      "stop", CHECK) == []


def test_the_bf16_answer_is_caught_on_every_count() -> None:
    problems = degeneracy(BF16_GARBAGE, ids(BF16_GARBAGE), "length", CHECK)
    assert any("no stop within 48 tokens" in p for p in problems)
    assert any("repeat" in p for p in problems)
    assert any("'Paris'" in p for p in problems)


@pytest.mark.parametrize(("text", "finish", "words"), [
    ("", "stop", "empty answer"),
    ("Paris " * 20, "stop", "repeat"),
    ("The capital of France is Paris, which", "length", "no stop"),
    ("The capital of France is Lyon.", "stop", "does not mention"),
])
def test_each_kind_of_degenerate_answer(text: str, finish: str, words: str) -> None:
    assert any(words in p for p in degeneracy(text, ids(text), finish, CHECK))


def test_no_expected_word_checks_only_the_shape() -> None:
    check = SelfCheck("Say hi.", "", 16)
    assert degeneracy("Hello there!", ids("Hello there!"), "stop", check) == []


async def test_a_degenerate_engine_fails_the_check_with_the_answer_in_the_message() -> None:
    engine = Scripted(BF16_GARBAGE, finish="length")
    with pytest.raises(StartupCheckFailed) as err:
        await run_self_check(engine, CHECK)
    message = str(err.value)
    assert "refusing to serve" in message and "L'Étoile" in message
    assert "CMESH_BACKEND_SELF_CHECK=false" in message
    request = engine.requests[0]
    assert request.chat and request.sampling.temperature == 0.0
    assert request.sampling.max_tokens == 48


async def test_a_sane_engine_passes_and_the_verdict_quotes_it() -> None:
    verdict = await run_self_check(Scripted("The capital of France is Paris."), CHECK)
    assert verdict.startswith("passed:") and "Paris" in verdict


async def test_check_off_still_warms_but_never_refuses() -> None:
    engine = Scripted(BF16_GARBAGE, finish="length")
    verdict = await run_self_check(engine, SelfCheck(CHECK.prompt, "Paris", 48, judge=False))
    assert verdict.startswith("off (warm-up only)")
    assert len(engine.requests) == 1


class Constant:
    name, version = "constant", "1"

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return np.full(len(prompts), 0.25, dtype=np.float32)


class DegenerateNode(ClassifierNode):
    """A node whose warm-up runs the check over the degenerate engine, after a pause in
    which the test reads its health."""

    warming = asyncio.Event()

    async def warm_up(self) -> None:
        DegenerateNode.warming.set()
        await asyncio.sleep(0.3)
        await run_self_check(Scripted(BF16_GARBAGE, finish="length"), CHECK)


async def test_a_failed_check_never_reports_serving() -> None:
    node = DegenerateNode(ClassifierSettings(port=0, drain_seconds=0), classifier=Constant())
    start = asyncio.ensure_future(node.__aenter__())
    await asyncio.wait_for(DegenerateNode.warming.wait(), 10)
    async with grpc.aio.insecure_channel(node.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(StartupCheckFailed):
        await asyncio.wait_for(start, 10)


def test_run_service_exits_with_the_startup_check_status(
        caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as err:
        run_service(lambda s: DegenerateNode(s, classifier=Constant()), ClassifierSettings,
                    ["--port", "0", "--drain_seconds", "0"])
    assert err.value.code == STARTUP_CHECK_EXIT
    assert any("refusing to serve" in r.getMessage() for r in caplog.records)
