"""Every error kind, sent through a real servicer on a real gRPC server, arrives as its
status code; nothing the project raises arrives as UNKNOWN.

The classifier node runs with a fake classifier (one class under test is the
error mapping, not the model) that raises what the prompt names; the
threshold and cacheability errors come from the real domain code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import numpy as np
import pytest

from cache.keys import Sampling, Scope, Uncacheable, namespace_of
from cascade.thresholds import ThresholdError, load_thresholds
from core import errors
from core.errors import ErrorKind
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from protos.common.v1 import common_pb2
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings

Code = grpc.StatusCode

RAISERS: dict[str, tuple[Callable[[], object], Code]] = {
    "field": (lambda: _raise(errors.FieldError("prompts[0]", "bad")), Code.INVALID_ARGUMENT),
    "threshold": (lambda: load_thresholds().with_overrides({"route.large": 2.0}),
                  Code.INVALID_ARGUMENT),
    "uncacheable": (lambda: namespace_of(Scope("t", sampling=Sampling(temperature=0.7))),
                    Code.FAILED_PRECONDITION),
    "precondition": (lambda: _raise(errors.FailedPrecondition("not now")),
                     Code.FAILED_PRECONDITION),
    "not-found": (lambda: _raise(errors.NotFound("no entry e1")), Code.NOT_FOUND),
    "unauthenticated": (lambda: _raise(errors.Unauthenticated("no key")), Code.UNAUTHENTICATED),
    "overloaded": (lambda: _raise(errors.Overloaded("full")), Code.RESOURCE_EXHAUSTED),
    "unavailable": (lambda: _raise(errors.Unavailable("engine died")), Code.UNAVAILABLE),
    "not-ready": (lambda: _raise(errors.NotReady("warming up")), Code.UNAVAILABLE),
    "deadline": (lambda: _raise(errors.DeadlineExceeded("too slow")), Code.DEADLINE_EXCEEDED),
    "timeout": (lambda: _raise(TimeoutError("builtin timeout")), Code.DEADLINE_EXCEEDED),
    "bug": (lambda: _raise(KeyError("a bug")), Code.INTERNAL),
    "plain-value-error": (lambda: _raise(ValueError("a bug too")), Code.INTERNAL),
}


def _raise(exc: BaseException) -> None:
    raise exc


class RaisingClassifier:
    """Scores 0.5, or raises the error its prompt names."""

    name = "raising"
    version = "1"

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        for prompt in prompts:
            if prompt in RAISERS:
                RAISERS[prompt][0]()
        return np.full(len(prompts), 0.5, dtype=np.float32)


@pytest.fixture(scope="module")
async def stub() -> AsyncIterator[classifier_pb2_grpc.ClassifierStub]:
    node = ClassifierNode(ClassifierSettings(port=0, max_wait_ms=0),
                          classifier=RaisingClassifier())
    async with node, grpc.aio.insecure_channel(node.address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel)


@pytest.mark.parametrize("name", list(RAISERS))
async def test_each_error_kind_reaches_the_client_as_its_status(
        stub: classifier_pb2_grpc.ClassifierStub, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(classifier_pb2.ScoreRequest(prompts=[name]), timeout=10)
    assert err.value.code() == RAISERS[name][1]
    assert err.value.code() != Code.UNKNOWN
    if name == "threshold":
        assert err.value.details().startswith("thresholds.route.large:")


async def test_servicer_validation_and_conversion_errors_name_the_field(
        stub: classifier_pb2_grpc.ClassifierStub) -> None:
    bad_role = classifier_pb2.ScoreRequest(
        prompts=["hi"], conversation=common_pb2.Conversation(turns=[common_pb2.Turn(content="x")]))
    for request, field in ((classifier_pb2.ScoreRequest(), "prompts"),
                           (bad_role, "conversation.turns[0].role")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(request, timeout=10)
        assert err.value.code() == Code.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}:")
    assert (await stub.Score(classifier_pb2.ScoreRequest(prompts=["fine"]))).scores == [0.5]


def test_every_domain_error_has_a_kind_and_every_kind_is_exercised() -> None:
    for package in ("core", "cache", "cascade"):
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")
    pending = [errors.DomainError]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        if cls is not errors.DomainError:
            assert cls.kind is not ErrorKind.INTERNAL, f"{cls.__name__} has no kind"
    assert {ThresholdError, Uncacheable} <= seen
    exercised = {RAISERS[n][1] for n in RAISERS}
    assert {grpc.StatusCode[k.value] for k in ErrorKind} <= exercised
