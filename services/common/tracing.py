"""OpenTelemetry traces for every service: one call, only when an OTLP endpoint is set.

`init_tracing(name, endpoint)` installs a tracer provider that exports to an
OTLP/gRPC collector and instruments grpc.aio servers and clients, so a request
carries one trace id from the gateway through the cache, the classifier and
the backends (W3C `traceparent` in the gRPC metadata). It must run before the
process makes its servers and channels; `GrpcService` calls it first thing.
Without an endpoint nothing is installed and the instrumentation costs nothing.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_provider: object | None = None


def init_tracing(service: str, endpoint: str | None, delay_ms: int = 500) -> bool:
    """Install tracing for this process once; True when it is on."""
    global _provider
    if _provider is not None:
        return True
    if not endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=not endpoint.startswith("https")),
        schedule_delay_millis=delay_ms))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    _provider = provider
    log.info("%s: traces to %s", service, endpoint)
    return True


def flush_tracing(timeout_ms: int = 5000) -> None:
    """Export the spans still buffered (on shutdown)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)  # type: ignore[attr-defined]
