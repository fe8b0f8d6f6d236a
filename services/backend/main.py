"""Backend service entry point: settings -> engine -> servicer -> server -> signals.

    python -m services.backend --served_name large --tensor_parallel_size 2 --port 50061

Every setting is also read from CMESH_BACKEND_<NAME> environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from services.backend.engine import VllmEngine
from services.backend.metrics import BackendMetrics
from services.backend.servicer import BackendServicer
from services.backend.settings import BackendSettings
from services.common.server import GrpcService, wait_for_signal

SERVICE_NAME = backend_pb2.DESCRIPTOR.services_by_name["Backend"].full_name
log = logging.getLogger("services.backend")


async def serve(settings: BackendSettings) -> None:
    """Serve until SIGTERM/SIGINT; health is NOT_SERVING until the engine is warm."""
    registry = CollectorRegistry()
    metrics = BackendMetrics(registry, settings.served_name)
    engine = VllmEngine(settings, stat_loggers=[metrics.stat_logger_factory()])
    metrics.unfinished.set_function(engine.unfinished)
    servicer = BackendServicer(engine, metrics)
    service = GrpcService(
        f"backend-{settings.served_name}", settings,
        register=lambda server: backend_pb2_grpc.add_BackendServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME], registry=registry,
    )
    try:
        async with service:
            stop = asyncio.ensure_future(wait_for_signal())
            load = asyncio.ensure_future(engine.start())
            await asyncio.wait({stop, load}, return_when=asyncio.FIRST_COMPLETED)
            if load.done():
                load.result()
                await service.set_serving(True)
                log.info("backend %s serving on %s", settings.served_name, service.address)
                await stop
            log.info("draining: NOT_SERVING for %.1fs, then stop", settings.drain_seconds)
            await service.set_serving(False)
            await asyncio.sleep(settings.drain_seconds)
    finally:
        engine.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags (and CMESH_BACKEND_* variables) and serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    settings = BackendSettings(_cli_parse_args=args)  # type: ignore[call-arg]
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
