"""Backend gRPC servicer: translate protobuf <-> engine types, record metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from services.backend.engine import Engine
from services.backend.metrics import BackendMetrics
from services.common.convert import (
    delta_to_chunk,
    generation_request_from_proto,
    prefill_request_from_proto,
    prefill_stats_to_proto,
)
from services.common.errors import grpc_errors, grpc_stream_errors


class BackendServicer(backend_pb2_grpc.BackendServicer):
    """Generate / Complete / Prefill / GetModelInfo / GetLoad over one `Engine`."""

    def __init__(self, engine: Engine, metrics: BackendMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    @grpc_stream_errors
    async def Generate(
        self, request: backend_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[backend_pb2.GenerateChunk]:
        m = self._metrics
        start = last = time.perf_counter()
        outcome = "cancelled"
        try:
            async for delta in self._engine.generate(generation_request_from_proto(request)):
                now = time.perf_counter()
                if delta.token_ids:
                    if last == start:
                        m.ttft.observe(now - start)
                    else:
                        m.inter_token.observe((now - last) / len(delta.token_ids))
                    last = now
                if delta.finish_reason is not None:
                    outcome = delta.finish_reason
                    m.prompt_tokens.inc(delta.prompt_tokens)
                    m.generation_tokens.inc(delta.completion_tokens)
                    m.e2e.observe(now - start)
                yield delta_to_chunk(delta)
        except Exception:
            outcome = "error"
            raise
        finally:
            m.requests.labels(m.tier, outcome).inc()

    @grpc_errors
    async def Complete(
        self, request: backend_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.Completion:
        completion = backend_pb2.Completion()
        texts = []
        async for chunk in self.Generate(request, context):
            texts.append(chunk.text_delta)
            completion.token_ids.extend(chunk.token_ids)
            completion.logprobs.extend(chunk.logprobs)
            if chunk.finish_reason:
                completion.finish_reason = chunk.finish_reason
                completion.usage.CopyFrom(chunk.usage)
        completion.text = "".join(texts)
        return completion

    @grpc_errors
    async def Prefill(
        self, request: backend_pb2.PrefillRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.PrefillStats:
        prompt, top = prefill_request_from_proto(request)
        start = time.perf_counter()
        stats = await self._engine.prefill(prompt, top)
        self._metrics.prefill.observe(time.perf_counter() - start)
        return prefill_stats_to_proto(stats)

    @grpc_errors
    async def GetModelInfo(
        self, request: backend_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.ModelInfo:
        info = self._engine.info()
        return backend_pb2.ModelInfo(**vars(info))

    @grpc_errors
    async def GetLoad(
        self, request: backend_pb2.GetLoadRequest, context: grpc.aio.ServicerContext
    ) -> backend_pb2.Load:
        return backend_pb2.Load(**vars(self._engine.load()))
