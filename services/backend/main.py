"""Backend service: settings -> engine -> servicer -> server; SERVING once the engine is loaded.

    python -m services.backend --served_name large --tensor_parallel_size 2 --port 50061

Every setting is also read from CMESH_BACKEND_<NAME> environment variables.
The node polls the engine's health, so a dead engine core turns the service
NOT_SERVING (and its calls UNAVAILABLE) instead of leaving it SERVING.
"""

from __future__ import annotations

from collections.abc import Sequence

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from services.backend.engine import VllmEngine
from services.backend.metrics import BackendMetrics
from services.backend.servicer import BackendServicer
from services.backend.settings import BackendSettings
from services.common.node import Registration, ServiceNode, full_name, run_service

SERVICE_NAME = full_name(backend_pb2, "Backend")


class BackendNode(ServiceNode[BackendSettings]):
    """One vLLM engine behind gRPC; `engine` is set once `build()` ran."""

    name = "backend"
    health_interval = 0.25  # a dead engine core shows as NOT_SERVING well within 2 s
    engine: VllmEngine | None = None

    async def build(self) -> list[Registration]:
        s = self.settings
        metrics = BackendMetrics(self.registry, s.served_name)
        engine = VllmEngine(s, stat_loggers=[metrics.stat_logger_factory()])
        metrics.unfinished.set_function(engine.unfinished)
        self.stack.callback(engine.shutdown)
        self.engine = engine
        return [Registration(BackendServicer(engine, metrics),
                             backend_pb2_grpc.add_BackendServicer_to_server, SERVICE_NAME)]

    async def warm_up(self) -> None:
        assert self.engine is not None
        await self.engine.start()

    async def check_health(self) -> None:
        assert self.engine is not None
        await self.engine.health()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve backend` and `python -m services.backend`."""
    run_service(BackendNode, BackendSettings, argv)


if __name__ == "__main__":
    main()
