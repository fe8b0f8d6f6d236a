"""gRPC Classifier servicer: protobuf <-> `cascade` classifier, errors -> status codes."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from cascade.classifiers import DifficultyClassifier, with_context
from core.batcher import MicroBatcher
from core.errors import FieldError
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.common.convert import conversation_from_proto
from services.common.errors import grpc_errors


class ClassifierMetrics:
    """The service's Prometheus metrics (prefix `classifier_`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scores = Histogram("classifier_scores", "Scores returned.", registry=registry,
                                buckets=tuple(i / 10 for i in range(1, 11)))
        self.batch = Histogram("classifier_batch_size", "Prompts per scoring batch.",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=registry)
        self.prescored = Counter("classifier_prescored", "Prompts scored from the caller's "
                                 "embedding (not embedded again).", registry=registry)
        self.latency = Histogram("classifier_score_seconds", "Score call latency.",
                                 registry=registry,
                                 buckets=(0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5))


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    """Validates requests, scores each prompt through the shared micro-batcher."""

    def __init__(self, classifier: DifficultyClassifier, batcher: MicroBatcher[str, float],
                 metrics: ClassifierMetrics, max_prompts: int, max_prompt_chars: int,
                 context_turns: int) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.metrics = metrics
        self.max_prompts = max_prompts
        self.max_prompt_chars = max_prompt_chars
        self.context_turns = context_turns

    def _texts(self, request: classifier_pb2.ScoreRequest) -> list[str]:
        if not request.prompts:
            raise FieldError("prompts", "must hold at least one prompt")
        if len(request.prompts) > self.max_prompts:
            raise FieldError("prompts", f"more than {self.max_prompts} prompts")
        for i, prompt in enumerate(request.prompts):
            if not prompt.strip():
                raise FieldError(f"prompts[{i}]", "must not be empty")
            if len(prompt) > self.max_prompt_chars:
                raise FieldError(f"prompts[{i}]", f"longer than {self.max_prompt_chars} characters")
        earlier = [t.content for t in conversation_from_proto(request.conversation).turns
                   if t.role != "assistant"]
        return [with_context(p, earlier, self.context_turns) for p in request.prompts]

    def _embedded(self, request: classifier_pb2.ScoreRequest,
                  texts: list[str]) -> np.ndarray | None:
        """The caller's embeddings when they can stand in for the service's own: one per
        prompt, of the model's width, and the scored text is the prompt itself."""
        if not request.embeddings:
            return None
        if len(request.embeddings) != len(request.prompts):
            raise FieldError("embeddings", "one per prompt, or none")
        if list(request.prompts) != texts or not hasattr(self.classifier, "score_embedded"):
            return None  # context changes the text, or the classifier takes no vectors
        vectors = np.asarray([list(e.values) for e in request.embeddings], dtype=np.float32)
        dim = getattr(getattr(self.classifier, "embedder", None), "dim", None)
        if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
            raise FieldError("embeddings", f"each must have {dim} values")
        return vectors

    @grpc_errors
    async def Score(self, request: classifier_pb2.ScoreRequest,
                    context: grpc.aio.ServicerContext) -> classifier_pb2.ScoreResponse:
        texts = self._texts(request)
        started = time.perf_counter()
        vectors = self._embedded(request, texts)
        if vectors is not None:
            # Optional on the DifficultyClassifier protocol; `_embedded` checked it exists.
            score_embedded = self.classifier.score_embedded  # type: ignore[attr-defined]
            scores = [float(s) for s in score_embedded(texts, vectors)]
            self.metrics.prescored.inc(len(scores))
        else:
            scores = await asyncio.gather(*(self.batcher.submit(t) for t in texts))
        self.metrics.latency.observe(time.perf_counter() - started)
        for score in scores:
            self.metrics.scores.observe(score)
        return classifier_pb2.ScoreResponse(scores=scores, classifier=self.classifier.name,
                                            version=self.classifier.version)
