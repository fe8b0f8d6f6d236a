"""Embed once: the cache returns the prompt's vector, the classifier scores that vector."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from core.embedder import Embedder
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from protos.common.v1 import common_pb2
from services.cache.main import CacheNode
from services.cache.settings import CacheSettings
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings

PROMPT = "Solve for x: 3x^2 - 12x + 9 = 0, and explain the discriminant."


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


async def test_cache_vector_scores_like_the_classifier_own(embedder: Embedder) -> None:
    scope = cache_pb2.Scope(tenant="t", sampling=common_pb2.SamplingParams(temperature=0))
    async with CacheNode(CacheSettings(port=0), embedder=embedder) as cache, \
            ClassifierNode(ClassifierSettings(port=0), embedder=embedder) as classifier, \
            grpc.aio.insecure_channel(f"127.0.0.1:{cache.port}") as cache_channel, \
            grpc.aio.insecure_channel(classifier.address) as classifier_channel:
        lookup = await cache_pb2_grpc.CacheStub(cache_channel).Lookup(
            cache_pb2.LookupRequest(scope=scope, prompt=PROMPT, return_embedding=True))
        assert not lookup.hit and len(lookup.embedding) == embedder.dim
        np.testing.assert_allclose(lookup.embedding, embedder.encode([PROMPT])[0], atol=1e-4)
        plain = await cache_pb2_grpc.CacheStub(cache_channel).Lookup(
            cache_pb2.LookupRequest(scope=scope, prompt=PROMPT))
        assert not plain.embedding

        stub = classifier_pb2_grpc.ClassifierStub(classifier_channel)
        registry = classifier.service.registry  # type: ignore[union-attr]
        own = await stub.Score(classifier_pb2.ScoreRequest(prompts=[PROMPT]))
        given = await stub.Score(classifier_pb2.ScoreRequest(
            prompts=[PROMPT], embeddings=[classifier_pb2.Embedding(values=lookup.embedding)]))
        assert given.scores[0] == pytest.approx(own.scores[0], abs=1e-4)
        assert registry.get_sample_value("classifier_prescored_total") == 1.0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(classifier_pb2.ScoreRequest(
                prompts=[PROMPT], embeddings=[classifier_pb2.Embedding(values=[0.1, 0.2])]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("embeddings")
