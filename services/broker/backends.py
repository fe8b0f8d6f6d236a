"""The broker's gRPC side: calls to backend replicas and their load.

Maps gRPC failures to the runner's terms: INVALID_ARGUMENT -> FieldError (the
job is at fault), RESOURCE_EXHAUSTED -> Overloaded (try elsewhere),
DEADLINE_EXCEEDED -> TimeoutError, anything else (UNAVAILABLE when a replica
died, INTERNAL, a broken stream) -> ReplicaFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import grpc

from core.errors import DeadlineExceeded, FieldError, Overloaded
from core.generation import Delta, GenerationRequest
from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from services.broker.dispatch import Replica
from services.broker.jobs import ReplicaFailed
from services.common.convert import chunk_to_delta, generation_request_to_proto
from services.common.errors import error_from_rpc
from services.common.settings import PEER_CHANNEL_OPTIONS

log = logging.getLogger(__name__)


class GrpcBackends:
    """Channels to every replica; `generate()` for the runner, `watch()` keeps loads fresh."""

    def __init__(self, on_change: Callable[[], None] | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._credentials = credentials  # (mutual) TLS to the backends when set
        self._on_change = on_change or (lambda: None)

    def _stub(self, address: str) -> backend_pb2_grpc.BackendStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = (grpc.aio.secure_channel(address, self._credentials,
                                               options=PEER_CHANNEL_OPTIONS)
                       if self._credentials is not None
                       else grpc.aio.insecure_channel(address, options=PEER_CHANNEL_OPTIONS))
            self._channels[address] = channel
        return backend_pb2_grpc.BackendStub(channel)

    async def generate(self, address: str, request: GenerationRequest,
                       continue_ids: Sequence[int], timeout: float | None
                       ) -> AsyncIterator[Delta]:
        if timeout is not None and timeout <= 0:
            raise TimeoutError("deadline passed")
        # a fresh request id per attempt: an aborted one may still be leaving the engine
        attempt = replace(request, request_id=f"{request.request_id}-{uuid.uuid4().hex[:8]}",
                          continue_token_ids=tuple(continue_ids))
        call = self._stub(address).Generate(generation_request_to_proto(attempt),
                                            timeout=timeout)
        try:
            async for chunk in call:
                yield chunk_to_delta(chunk)
        except grpc.aio.AioRpcError as exc:
            raise _mapped(exc) from exc
        finally:
            call.cancel()  # no-op when finished; aborts the engine's request otherwise

    async def refresh(self, replica: Replica, timeout: float = 1.0) -> None:
        """Ask one replica for its load; mark it healthy or not."""
        was = (replica.healthy, replica.capacity, replica.reported_in_flight)
        try:
            load = await self._stub(replica.address).GetLoad(backend_pb2.GetLoadRequest(),
                                                             timeout=timeout)
            replica.healthy = True
            replica.capacity = int(load.max_num_seqs)
            replica.reported_in_flight = int(load.in_flight)
        except grpc.aio.AioRpcError as exc:
            if replica.healthy:
                log.warning("replica %s unhealthy: %s", replica.address, exc.code().name)
            replica.healthy = False
        if (replica.healthy, replica.capacity, replica.reported_in_flight) != was:
            self._on_change()

    async def watch(self, replicas: Sequence[Replica], every_s: float) -> None:
        """Poll every replica's load until cancelled."""
        while True:
            await asyncio.gather(*(self.refresh(r) for r in replicas))
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()


def _mapped(exc: grpc.aio.AioRpcError) -> Exception:
    """A backend's failure through the one error table: bad fields and overload keep
    their data (field, retry-after from the trailers), anything else is the replica's."""
    err = error_from_rpc(exc)
    if isinstance(err, (FieldError, Overloaded)):
        return err
    if isinstance(err, DeadlineExceeded):
        return TimeoutError(str(err))
    return ReplicaFailed(f"{exc.code().name}: {exc.details() or exc.code().name}")
