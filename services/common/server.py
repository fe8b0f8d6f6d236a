"""The gRPC server every service shares: health, reflection, metrics, interceptors, signals.

Services do not use it directly: `services.common.node.ServiceNode` runs the
whole lifecycle around it. Leaving its block reports NOT_SERVING at once and
gives in-flight calls `grace_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Self
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from services.common.callers import CallerCheck
from services.common.decoding import StrictDecoding
from services.common.settings import ServiceSettings
from services.common.tracing import flush_tracing, init_tracing

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Generous message limits: prompts and answers are text, but batches add up.
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


class GrpcService:
    """A grpc.aio server with standard health (NOT_SERVING until warm), reflection,
    a Prometheus side port, requests decoded inside the call (`StrictDecoding`) and
    optional interceptors (auth, request ids), as one async context manager.

    `registry` exists from construction on, so servicers can create their metrics
    in it before the server starts; several services can share one process.
    """

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        registry: CollectorRegistry | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        init_tracing(name, settings.otlp_endpoint)
        self.registry = registry or CollectorRegistry()
        self.port: int = 0
        self.metrics_port: int | None = None
        self._register = register
        # Decoding inside the call: a request that does not decode is INVALID_ARGUMENT.
        self._interceptors: list[grpc.aio.ServerInterceptor] = [StrictDecoding(),
                                                                *interceptors]
        if settings.tls_allowed_callers:  # first: nothing runs for a caller turned away
            self._interceptors.insert(0, CallerCheck(settings.tls_allowed_callers))
        self._credentials = credentials or settings.server_credentials()
        self._service_names = list(service_names)
        self._health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._metrics_server: WSGIServer | None = None

    @property
    def address(self) -> str:
        """host:port clients dial (after the server has started)."""
        return f"{self.settings.host}:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and each service."""
        status = SERVING if serving else NOT_SERVING
        for service in ["", *self._service_names]:
            await self._health.set(service, status)

    async def set_part_serving(self, name: str, serving: bool) -> None:
        """Report one part of what this server fronts (a gateway's tier) under its own
        health name, apart from the server's own status."""
        await self._health.set(name, SERVING if serving else NOT_SERVING)

    async def __aenter__(self) -> Self:
        server = grpc.aio.server(options=_OPTIONS, interceptors=self._interceptors or None)
        self._register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self.set_serving(False)
        reflection.enable_server_reflection(
            [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
        )
        bind = f"{self.settings.host}:{self.settings.port}"
        self.port = (server.add_secure_port(bind, self._credentials) if self._credentials
                     else server.add_insecure_port(bind))
        if self.port == 0:
            raise OSError(f"{self.name}: cannot bind {self.settings.host}:{self.settings.port}")
        await server.start()
        self._server = server
        if self.settings.metrics_port is not None:
            httpd, _thread = start_http_server(
                self.settings.metrics_port, addr=self.settings.host, registry=self.registry
            )
            self._metrics_server = httpd
            self.metrics_port = int(httpd.server_port)
        if self.settings.port_file is not None:
            self.settings.port_file.write_text(f"{self.port}\n")
        log.info("%s listening on %s (metrics port %s)", self.name, self.address,
                 self.metrics_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()

    async def drain(self) -> None:
        """NOT_SERVING at once, then let in-flight calls finish within the grace period."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.settings.grace_seconds)
        self._server = None
        flush_tracing()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        log.info("%s stopped", self.name)


async def wait_for_signal(
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> signal.Signals:
    """Block until one of `signals` arrives; return which one."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    def receive(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, receive, sig)
    try:
        return await received
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
