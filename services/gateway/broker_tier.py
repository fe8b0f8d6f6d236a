"""A tier served through the broker: the job goes to the tier's JetStream queue,
its chunks come back on the job's reply subject (`services.broker.client`).

Same interface as the direct `BackendTier`, so the orchestrator does not know
which one it has. Leaving the stream early (client cancel, deadline, an
escalation decision) cancels the job on the broker, which aborts the backend call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from core.generation import Delta
from services.broker.client import BrokerClient, JobError
from services.common.convert import chunk_to_delta, generation_request_to_job
from services.common.errors import error_from
from services.gateway.clients import tier_error
from services.gateway.domain import TierCall


def job_error(tier: str, err: JobError) -> Exception:
    """The domain error for a failed or refused job, through the one error table, with
    the field and the wait the job error carries as data."""
    retry = err.retry_after_ms / 1000 if err.retry_after_ms else None
    return tier_error(tier, error_from(err.kind, err.message, field=err.field or None,
                                       retry_after_s=retry))


class BrokerTier:
    """One tier behind the broker, over a shared `BrokerClient` (NATS connection)."""

    def __init__(self, tier: str, client: BrokerClient) -> None:
        self.tier = tier
        self.client = client

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        message = generation_request_to_job(call.request, self.tier, tenant=call.tenant,
                                            batch=call.batch, stream=True)
        try:
            stream = await self.client.submit(message, deadline_s=call.timeout_s)
            async for chunk in stream:
                yield chunk_to_delta(chunk)
        except JobError as err:
            raise job_error(self.tier, err) from err
