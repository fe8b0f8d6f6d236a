"""Broker service entry point: settings -> queue + backends -> tier workers -> server.

    python -m services.broker --backends 'small=127.0.0.1:50051' --nats_url nats://...

Every setting is also read from CMESH_BROKER_<NAME> environment variables. On
SIGTERM the broker reports NOT_SERVING, stops fetching, hands buffered jobs
back, lets running jobs finish, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

import grpc
from prometheus_client import CollectorRegistry

from protos.broker.v1 import broker_pb2, broker_pb2_grpc
from services.broker.backends import GrpcBackends
from services.broker.jetstream import JobQueue
from services.broker.metrics import BrokerMetrics
from services.broker.scheduler import CLASSES
from services.broker.settings import BrokerSettings
from services.broker.tier import TierWorker
from services.common.server import GrpcService, wait_for_signal

SERVICE_NAME = broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
log = logging.getLogger("services.broker")


class BrokerServicer(broker_pb2_grpc.BrokerServicer):
    """Status of every tier this broker serves."""

    def __init__(self, workers: list[TierWorker]) -> None:
        self._workers = workers

    async def GetStatus(self, request: broker_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> broker_pb2.BrokerStatus:
        status = broker_pb2.BrokerStatus()
        for w in self._workers:
            for r in w.replicas:
                status.replicas.add(tier=w.tier, address=r.address, healthy=r.healthy,
                                    in_flight=r.local_in_flight,
                                    free_slots=r.free_slots, queue_depth=r.queue_depth)
            for c in CLASSES:
                status.queues.add(tier=w.tier, job_class=c,
                                  pending=await w.queue.pending(w.tier, c),
                                  buffered=w.scheduler.buffered(c))
            status.jobs_completed += w.stats["completed"]
            status.jobs_terminated += w.stats["terminated"]
            status.redeliveries += w.stats["redeliveries"]
        return status


async def serve(settings: BrokerSettings) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    registry = CollectorRegistry()
    metrics = BrokerMetrics(registry)
    workers: list[TierWorker] = []
    servicer = BrokerServicer(workers)
    service = GrpcService(
        "broker", settings,
        register=lambda server: broker_pb2_grpc.add_BrokerServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME], registry=registry,
    )
    async with contextlib.AsyncExitStack() as stack:
        queue = await stack.enter_async_context(JobQueue(settings.nats_servers,
                                                         settings.limits()))
        backends = GrpcBackends(on_change=lambda: [w.changed.fire() for w in workers])
        stack.push_async_callback(backends.close)
        workers += [TierWorker(tier, addresses, queue, backends, settings, metrics)
                    for tier, addresses in settings.tiers.items()]
        for tier in settings.tiers:
            await queue.ensure(tier)  # publishing works as soon as we report SERVING
        await queue.on_cancel(_cancel_all(workers))
        await stack.enter_async_context(service)
        tasks = [asyncio.create_task(w.run(), name=f"tier-{w.tier}") for w in workers]
        tasks += [asyncio.create_task(backends.watch(w.replicas, settings.load_poll_s))
                  for w in workers]
        await service.set_serving(True)
        log.info("broker serving tiers %s on %s", sorted(settings.tiers), service.address)
        stop = asyncio.ensure_future(wait_for_signal())
        await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done() and t.exception() is not None:
                log.error("worker failed: %r", t.exception())
        log.info("draining: NOT_SERVING, no new fetches, finishing running jobs")
        await service.set_serving(False)
        await asyncio.gather(*(w.drain() for w in workers))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.cancel()


def _cancel_all(workers: list[TierWorker]):  # type: ignore[no-untyped-def]
    async def cancel(job_id: str) -> None:
        for w in workers:
            await w.cancel(job_id)

    return cancel


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags (and CMESH_BROKER_* variables) and serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    settings = BrokerSettings(_cli_parse_args=args)  # type: ignore[call-arg]
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
