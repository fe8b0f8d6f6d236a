"""The gRPC door (Ask / AskStream): metadata -> admission -> `Question` -> orchestrator
events -> protobuf. A translator only: admission decides who may ask, the
orchestrator how to answer, `services.common.errors` which status a failure gets.

Health and reflection are other servicers on the same server, so probes and
`grpcurl list` need no key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.errors import grpc_errors, grpc_stream_errors, status_for
from services.gateway.admission import Admission
from services.gateway.collect import collect
from services.gateway.convert import metadata_to_pb, question_from_pb
from services.gateway.domain import Event, TextDelta
from services.gateway.metrics import GatewayMetrics
from services.gateway.orchestrator import Orchestrator


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The call's one `authorization` value (None when absent or repeated)."""
    values = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Translates messages; admission and the orchestrator decide."""

    def __init__(self, orchestrator: Orchestrator, admission: Admission,
                 metrics: GatewayMetrics) -> None:
        self.orchestrator = orchestrator
        self.admission = admission
        self.metrics = metrics

    async def _events(self, request: gateway_pb2.AskRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Event]:
        try:
            caller = await self.admission.admit(authorization(context))
            question = question_from_pb(request, caller.tenant, caller.request_id,
                                        self.orchestrator.config.limits.max_turns)
            async for event in self.orchestrator.ask(question, context.time_remaining()):
                yield event
        except Exception as exc:
            self.metrics.errors.labels(status_for(exc).name).inc()
            raise

    @grpc_errors
    async def Ask(self, request: gateway_pb2.AskRequest,
                  context: grpc.aio.ServicerContext) -> gateway_pb2.AskResponse:
        answer = await collect(self._events(request, context))
        return gateway_pb2.AskResponse(text=answer.text,
                                       metadata=metadata_to_pb(answer.metadata))

    @grpc_stream_errors
    async def AskStream(self, request: gateway_pb2.AskRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[gateway_pb2.AskChunk]:
        async for event in self._events(request, context):
            if isinstance(event, TextDelta):
                yield gateway_pb2.AskChunk(text_delta=event.text)
            else:
                yield gateway_pb2.AskChunk(metadata=metadata_to_pb(event))
