"""One lifecycle for every service: settings -> domain objects -> GrpcService -> warm up ->
SERVING -> (health watch) -> NOT_SERVING -> drain.

A service subclasses `ServiceNode`, builds its domain objects and servicers in
`build()`, loads or warms models in `warm_up()` (the server already answers
health checks, NOT_SERVING, meanwhile) and, when it depends on something that
can die underneath it (the backend's engine), raises from `check_health()`;
the node then reports NOT_SERVING until the check passes again. `main()` is
`run_service(MyNode, MySettings, argv)`.

    class EchoNode(ServiceNode):
        name = "echo"

        async def build(self) -> list[Registration]:
            servicer = EchoServicer(EchoMetrics(self.registry))
            return [Registration(servicer, add_EchoServicer_to_server,
                                 full_name(echo_pb2, "Echo"))]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Generic, Self, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from core.errors import StartupCheckFailed
from services.common.natsauth import refuse_passwords_in_argv
from services.common.server import GrpcService, wait_for_signal
from services.common.settings import ServiceSettings
from services.common.tracing import init_tracing

log = logging.getLogger(__name__)
STARTUP_CHECK_EXIT = 3
"""Exit status of a service whose start-up check refused to serve (1 is any crash)."""
S = TypeVar("S", bound=ServiceSettings)


def full_name(pb2: ModuleType, service: str) -> str:
    """The fully qualified name of `service` in a generated `*_pb2` module."""
    return str(pb2.DESCRIPTOR.services_by_name[service].full_name)


@dataclass(frozen=True)
class Registration:
    """One servicer, the generated function that adds it, and its health/reflection name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    service_name: str


class ServiceNode(Generic[S]):
    """Base of every service's node; use as `async with Node(settings) as node:`."""

    name: ClassVar[str] = "service"
    health_interval: ClassVar[float] = 0.0
    """Seconds between `check_health()` calls while serving; 0 turns the watch off."""

    def __init__(self, settings: S, *,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.settings = settings
        self.interceptors = list(interceptors)
        self.registry = CollectorRegistry()
        self.stack = AsyncExitStack()
        self.service: GrpcService | None = None
        self._draining = False

    @property
    def port(self) -> int:
        """The bound gRPC port."""
        assert self.service is not None, "node not started"
        return self.service.port

    @property
    def address(self) -> str:
        """host:port to dial."""
        assert self.service is not None, "node not started"
        return self.service.address

    async def build(self) -> list[Registration]:
        """Make the domain objects and servicers. Long-lived resources go on `self.stack`,
        metrics into `self.registry`."""
        raise NotImplementedError

    async def warm_up(self) -> None:
        """Load and warm models; runs with the server up and NOT_SERVING."""

    async def check_health(self) -> None:
        """Raise when the node cannot serve (polled every `health_interval` seconds)."""

    async def __aenter__(self) -> Self:
        # Tracing instruments grpc.aio channels made from here on, so it goes first.
        init_tracing(self.name, self.settings.otlp_endpoint)
        try:
            registrations = await self.build()

            def register(server: grpc.aio.Server) -> None:
                for r in registrations:
                    r.add_to_server(r.servicer, server)

            self.service = GrpcService(
                self.name, self.settings, register=register,
                service_names=[r.service_name for r in registrations],
                registry=self.registry, interceptors=self.interceptors)
            await self.stack.enter_async_context(self.service)
            await self.warm_up()
            await self.service.set_serving(True)
            if self.health_interval > 0:
                watch = asyncio.create_task(self._watch_health(), name=f"{self.name}-health")
                self.stack.push_async_callback(cancel_task, watch)
        except BaseException:
            await self.stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._draining = True
        if self.service is not None:
            await self.service.set_serving(False)
            drain = self.settings.drain_seconds
            if drain > 0:
                log.info("%s draining: NOT_SERVING for %.1fs, then stop", self.name, drain)
                await asyncio.sleep(drain)
        await self.stack.aclose()

    async def _watch_health(self) -> None:
        assert self.service is not None
        serving = True
        timeout = max(1.0, 4 * self.health_interval)
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await asyncio.wait_for(self.check_health(), timeout)
                healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                healthy = False
                if serving:
                    log.error("%s unhealthy, reporting NOT_SERVING: %s", self.name, exc)
            if healthy != serving and not self._draining:
                await self.service.set_serving(healthy)
                serving = healthy


async def cancel_task(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait for it to finish."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(node: ServiceNode[Any]) -> None:
    """Run `node` until SIGTERM or SIGINT, then drain; a signal during warm-up stops it too."""
    stop = asyncio.ensure_future(wait_for_signal())
    start = asyncio.ensure_future(node.__aenter__())
    try:
        await asyncio.wait({stop, start}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            log.info("%s: signal during start-up, stopping", node.name)
            await cancel_task(start)
            return
        start.result()
        try:
            log.info("%s serving on %s", node.name, node.address)
            await stop
        finally:
            await node.__aexit__(None, None, None)
    finally:
        await cancel_task(stop)


def run_service(node_type: Callable[[S], ServiceNode[S]], settings_type: type[S],
                argv: Sequence[str] | None = None) -> None:
    """A service's `main()`: flags (and its environment variables) -> settings -> serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    refuse_passwords_in_argv(args)
    # pydantic-settings reads `_cli_parse_args` at run time; the generated __init__
    # signature lists only the model's fields, hence the ignore.
    settings = settings_type(_cli_parse_args=args)  # type: ignore[call-arg]
    try:
        asyncio.run(serve(node_type(settings)))
    except StartupCheckFailed as exc:
        log.error("%s: %s", settings_type.__name__.removesuffix("Settings").lower(), exc)
        sys.exit(STARTUP_CHECK_EXIT)
