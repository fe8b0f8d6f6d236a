"""Broker service entry point: settings -> queue + backends -> tier workers -> server.

    python -m services.broker --backends 'small=127.0.0.1:50051' --nats_url nats://...

Every setting is also read from CMESH_BROKER_<NAME> environment variables. On
SIGTERM the broker reports NOT_SERVING, stops fetching, hands buffered jobs
back, lets running jobs finish, then exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc

from protos.broker.v1 import broker_pb2, broker_pb2_grpc
from services.broker.backends import GrpcBackends
from services.broker.jetstream import JobQueue
from services.broker.metrics import BrokerMetrics
from services.broker.scheduler import CLASSES
from services.broker.settings import BrokerSettings
from services.broker.tier import TierWorker
from services.common.natsauth import connect_options
from services.common.node import Registration, ServiceNode, cancel_task, full_name, run_service
from services.common.settings import channel_credentials

SERVICE_NAME = full_name(broker_pb2, "Broker")
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


class BrokerNode(ServiceNode[BrokerSettings]):
    """The kit's lifecycle around the tier workers: health and metrics on gRPC, jobs on NATS.

    Shutdown order (the exit stack unwinds in reverse): NOT_SERVING, then the
    workers drain (no new fetches, buffered jobs handed back, running jobs
    finish), then their loops stop, then the server and the NATS connection.
    """

    name = "broker"

    def _backends_changed(self) -> None:
        for worker in self.workers:
            worker.changed.fire()

    async def build(self) -> list[Registration]:
        s = self.settings
        metrics = BrokerMetrics(self.registry)
        self.queue = await self.stack.enter_async_context(
            JobQueue(s.nats_servers, s.limits(),
                     connect_options=connect_options("broker", s.nats_credentials_file)))
        self.workers: list[TierWorker] = []
        credentials = (channel_credentials(s.mesh_ca, s.mesh_cert, s.mesh_key)
                       if s.mesh_ca is not None else None)
        backends = GrpcBackends(on_change=self._backends_changed, credentials=credentials)
        self.stack.push_async_callback(backends.close)
        self.backends = backends
        self.workers += [TierWorker(tier, addresses, self.queue, backends, s, metrics)
                         for tier, addresses in s.tiers.items()]
        return [Registration(BrokerServicer(self.workers),
                             broker_pb2_grpc.add_BrokerServicer_to_server, SERVICE_NAME)]

    async def warm_up(self) -> None:
        for w in self.workers:
            await w.prepare()  # publishing works as soon as we report SERVING
        await self.queue.on_cancel(_cancel_all(self.workers))
        for w in self.workers:
            for task in (asyncio.create_task(w.run(), name=f"tier-{w.tier}"),
                         asyncio.create_task(self.backends.watch(w.replicas,
                                                                 self.settings.load_poll_s))):
                self.stack.push_async_callback(cancel_task, task)
        self.stack.push_async_callback(self._drain)
        log.info("broker serving tiers %s", sorted(self.settings.tiers))

    async def _drain(self) -> None:
        log.info("draining: no new fetches, buffered jobs handed back, running jobs finish")
        await asyncio.gather(*(w.drain() for w in self.workers))


def _cancel_all(workers: list[TierWorker]) -> Callable[[str], Awaitable[None]]:
    async def cancel(job_id: str) -> None:
        for w in workers:
            await w.cancel(job_id)

    return cancel


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve broker` and `python -m services.broker`."""
    run_service(BrokerNode, BrokerSettings, argv)


if __name__ == "__main__":
    main()
