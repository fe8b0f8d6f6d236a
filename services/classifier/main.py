"""Classifier service wiring: settings -> classifier -> micro-batcher -> gRPC server.

`ClassifierNode` is the whole service as one async context manager (tests
share one loaded embedder with it); `main()` runs one until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Self

from prometheus_client import CollectorRegistry

from cache.batcher import MicroBatcher
from cascade.classifiers import DifficultyClassifier, make_classifier
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.servicer import ClassifierMetrics, ClassifierServicer
from services.classifier.settings import ClassifierSettings
from services.common.server import GrpcService, wait_for_signal

if TYPE_CHECKING:
    from cache.embedder import Embedder

SERVICE_NAME = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name


class ClassifierNode:
    """One classifier replica: loads the model, warms it, serves Score."""

    def __init__(self, settings: ClassifierSettings, embedder: Embedder | None = None,
                 classifier: DifficultyClassifier | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self.classifier = classifier
        self._stack = AsyncExitStack()
        self.service: GrpcService | None = None

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        assert self.service is not None
        return self.service.port

    @property
    def address(self) -> str:
        """host:port to dial."""
        assert self.service is not None
        return self.service.address

    def _make(self) -> DifficultyClassifier:
        s = self.settings
        embedder = self._embedder
        if embedder is None and s.model_path is not None:
            from cache.embedder import Embedder

            embedder = Embedder(s.model_path)
        return make_classifier(s.classifier, artifact=s.artifact, embedder=embedder)

    async def __aenter__(self) -> Self:
        s = self.settings
        try:
            classifier = self.classifier or await asyncio.to_thread(self._make)
            self.classifier = classifier
            registry = CollectorRegistry()
            metrics = ClassifierMetrics(registry)
            batcher: MicroBatcher[str, float] = await self._stack.enter_async_context(
                MicroBatcher(lambda texts: classifier.score(texts).tolist(),
                             max_batch=s.max_batch, max_wait=s.max_wait_ms / 1000,
                             on_batch=metrics.batch.observe))
            servicer = ClassifierServicer(classifier, batcher, metrics, s.max_prompts,
                                          s.max_prompt_chars, s.context_turns)
            self.service = GrpcService(
                "classifier", s,
                register=lambda server: classifier_pb2_grpc.add_ClassifierServicer_to_server(
                    servicer, server),
                service_names=[SERVICE_NAME], registry=registry)
            await self._stack.enter_async_context(self.service)
            await asyncio.to_thread(classifier.score, ["warm-up"])
            await self.service.set_serving(True)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            await self.service.set_serving(False)
        await self._stack.aclose()


async def serve(settings: ClassifierSettings) -> None:
    """Run one replica until SIGTERM or SIGINT, then drain."""
    async with ClassifierNode(settings) as node:
        logging.getLogger(__name__).info("classifier serving on %s", node.address)
        await wait_for_signal()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve classifier`: flags (and CMESH_CLASSIFIER_*), then serve."""
    logging.basicConfig(level=logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(ClassifierSettings(_cli_parse_args=args)))  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
