"""The shared node lifecycle: interceptors reach the server, the health watch follows
`check_health()`, and leaving the block reports NOT_SERVING. A fake classifier
stands in for the model: the class under test is the lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import Unavailable
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Constant:
    name, version = "constant", "1"

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        return np.full(len(prompts), 0.25, dtype=np.float32)


class NeedsKey(grpc.aio.ServerInterceptor):
    """Refuses calls without an `x-api-key` header, as the gateway's auth will."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if "health" in details.method or ("x-api-key", "k") in (details.invocation_metadata or ()):
            return await continuation(details)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "x-api-key is required")

        return grpc.unary_unary_rpc_method_handler(deny)


class FlakyNode(ClassifierNode):
    health_interval = 0.05
    broken = False

    async def check_health(self) -> None:
        if self.broken:
            raise Unavailable("dependency down")


async def _status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def test_interceptors_see_every_call() -> None:
    node = ClassifierNode(ClassifierSettings(port=0), classifier=Constant(),
                          interceptors=[NeedsKey()])
    async with node, grpc.aio.insecure_channel(node.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        request = classifier_pb2.ScoreRequest(prompts=["hi"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Score(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub.Score(request, metadata=(("x-api-key", "k"),))
        assert list(reply.scores) == [0.25]


async def test_health_follows_check_health_and_drain() -> None:
    node = await FlakyNode(ClassifierSettings(port=0), classifier=Constant()).__aenter__()
    try:
        async with grpc.aio.insecure_channel(node.address) as channel:
            assert await _status(channel) == SERVING
            node.broken = True
            await _eventually(channel, NOT_SERVING)
            node.broken = False
            await _eventually(channel, SERVING)
            await node.__aexit__(None, None, None)  # NOT_SERVING, then the server stops
            with pytest.raises(grpc.aio.AioRpcError):
                await _status(channel)
    finally:
        await node.__aexit__(None, None, None)  # idempotent


async def _eventually(channel: grpc.aio.Channel, status: int, within: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while await _status(channel) != status:
        assert asyncio.get_running_loop().time() < deadline, f"health never became {status}"
        await asyncio.sleep(0.02)
