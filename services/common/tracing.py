"""OpenTelemetry traces for every service: one call, only when an OTLP endpoint is set.

`init_tracing(name, endpoint)` installs a tracer provider that exports to an
OTLP/gRPC collector and instruments grpc.aio servers and clients, so a request
carries one trace id from the gateway through the cache, the classifier and
the backends (W3C `traceparent` in the gRPC metadata). It must run before the
process makes its servers and channels; `GrpcService` calls it first thing.
Without an endpoint nothing is installed and the instrumentation costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: without an endpoint nothing of the SDK loads
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)
_provider: TracerProvider | None = None


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
        _provider.force_flush(timeout_ms)


def trace_headers() -> dict[str, str]:
    """The current trace context as message headers (W3C `traceparent`), for NATS; empty
    when no span is active (tracing off)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def continued_trace(headers: Mapping[str, str] | None, span_name: str) -> Iterator[None]:
    """Run the block in a span that continues the trace of a received message's headers
    (the broker running a job the gateway published), so the backend calls it makes
    join the request's trace."""
    if _provider is None:
        yield
        return
    from opentelemetry import context, propagate, trace

    token = context.attach(propagate.extract(dict(headers or {})))
    try:
        with trace.get_tracer("cascade-mesh").start_as_current_span(
                span_name, kind=trace.SpanKind.CONSUMER):
            yield
    finally:
        context.detach(token)
