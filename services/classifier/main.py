"""Classifier service: settings -> classifier -> micro-batcher -> gRPC server.

`ClassifierNode` is the whole service as one async context manager (tests
share one loaded embedder with it); `main()` runs one until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cascade.classifiers import DifficultyClassifier, make_classifier
from core.batcher import MicroBatcher
from core.embedder import Embedder
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.servicer import ClassifierMetrics, ClassifierServicer
from services.classifier.settings import ClassifierSettings
from services.common.node import Registration, ServiceNode, full_name, run_service

SERVICE_NAME = full_name(classifier_pb2, "Classifier")


class ClassifierNode(ServiceNode[ClassifierSettings]):
    """One classifier replica: loads the model, warms it, serves Score."""

    name = "classifier"
    _batcher: MicroBatcher[str, float]

    def __init__(self, settings: ClassifierSettings, embedder: Embedder | None = None,
                 classifier: DifficultyClassifier | None = None, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._embedder, self.classifier = embedder, classifier

    def _make(self) -> DifficultyClassifier:
        s = self.settings
        embedder = self._embedder
        if embedder is None and s.model_path is not None:
            embedder = Embedder(s.model_path)
        return make_classifier(s.classifier, artifact=s.artifact, embedder=embedder)

    async def build(self) -> list[Registration]:
        s = self.settings
        classifier = self.classifier
        if classifier is None:
            classifier = await asyncio.to_thread(self._make)
        self.classifier = classifier
        metrics = ClassifierMetrics(self.registry)
        batcher: MicroBatcher[str, float] = await self.stack.enter_async_context(
            MicroBatcher(lambda texts: classifier.score(texts).tolist(),
                         max_batch=s.max_batch, max_wait=s.max_wait_ms / 1000,
                         on_batch=metrics.batch.observe))
        self._batcher = batcher
        servicer = ClassifierServicer(classifier, batcher, metrics, s.max_prompts,
                                      s.max_prompt_chars, s.context_turns)
        return [Registration(servicer, classifier_pb2_grpc.add_ClassifierServicer_to_server,
                             SERVICE_NAME)]

    async def warm_up(self) -> None:
        """The encoder's slow first calls (see `Embedder.warm_up`), then one prompt through
        the batcher: loads the model's lazy parts on the real path."""
        embedder = getattr(self.classifier, "embedder", None)
        if embedder is not None:
            await asyncio.to_thread(embedder.warm_up)
        await self._batcher.submit("warm-up")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve classifier`: flags (and CMESH_CLASSIFIER_*), then serve."""
    run_service(ClassifierNode, ClassifierSettings, argv)


if __name__ == "__main__":
    main()
