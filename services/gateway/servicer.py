"""gRPC Gateway servicer: AskRequest -> `Question` -> orchestrator events -> protobuf."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from core.errors import NotReady
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.errors import grpc_errors, grpc_stream_errors, status_for
from services.gateway.auth import REQUEST_ID, TENANT
from services.gateway.convert import metadata_to_pb, question_from_pb
from services.gateway.domain import Event, Metadata, TextDelta
from services.gateway.metrics import GatewayMetrics
from services.gateway.orchestrator import Orchestrator


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Translates messages; the orchestrator decides."""

    def __init__(self, orchestrator: Orchestrator, metrics: GatewayMetrics) -> None:
        self.orchestrator = orchestrator
        self.metrics = metrics

    def _events(self, request: gateway_pb2.AskRequest,
                context: grpc.aio.ServicerContext) -> AsyncIterator[Event]:
        tenant = TENANT.get()
        if tenant is None:  # only reachable without the auth interceptor
            raise NotReady("authentication is not configured")
        question = question_from_pb(request, tenant, REQUEST_ID.get())
        return self.orchestrator.ask(question, context.time_remaining())

    @grpc_errors
    async def Ask(self, request: gateway_pb2.AskRequest,
                  context: grpc.aio.ServicerContext) -> gateway_pb2.AskResponse:
        parts: list[str] = []
        meta: Metadata | None = None
        try:
            async for event in self._events(request, context):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                else:
                    meta = event
        except Exception as exc:
            self.metrics.errors.labels(status_for(exc).name).inc()
            raise
        assert meta is not None
        return gateway_pb2.AskResponse(text="".join(parts), metadata=metadata_to_pb(meta))

    @grpc_stream_errors
    async def AskStream(self, request: gateway_pb2.AskRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.AskChunk]:
        try:
            async for event in self._events(request, context):
                if isinstance(event, TextDelta):
                    yield gateway_pb2.AskChunk(text_delta=event.text)
                else:
                    yield gateway_pb2.AskChunk(metadata=metadata_to_pb(event))
        except Exception as exc:
            self.metrics.errors.labels(status_for(exc).name).inc()
            raise
