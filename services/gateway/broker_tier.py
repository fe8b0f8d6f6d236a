"""A tier served through the broker: the job goes to the tier's JetStream queue,
its chunks come back on the job's reply subject (`services.broker.client`).

Same interface as the direct `BackendTier`, so the orchestrator does not know
which one it has. Leaving the stream early (client cancel, deadline, an
escalation decision) cancels the job on the broker, which aborts the backend call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from protos.broker.v1 import broker_pb2
from services.broker.client import BrokerClient, JobError
from services.common.convert import finish_reason_from_proto, sampling_to_proto
from services.common.errors import error_from
from services.gateway.clients import tier_error
from services.gateway.convert import conversation_pb
from services.gateway.domain import TierChunk, TierJob


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

    async def generate(self, job: TierJob) -> AsyncIterator[TierChunk]:
        message = broker_pb2.GenerateJob(
            job_id=job.request_id, tier=self.tier, tenant=job.tenant, prompt=job.prompt,
            conversation=conversation_pb(job.system_prompt, job.turns),
            sampling=sampling_to_proto(job.sampling), return_logprobs=job.logprobs,
            stream=True, chat=True,
            priority=broker_pb2.PRIORITY_BATCH if job.batch else broker_pb2.PRIORITY_INTERACTIVE)
        try:
            stream = await self.client.submit(message, deadline_s=job.timeout_s)
            async for chunk in stream:
                yield TierChunk(
                    text=chunk.text_delta,
                    logprobs=tuple(lp.logprob for lp in chunk.logprobs),
                    finish_reason=finish_reason_from_proto(chunk.finish_reason),
                    prompt_tokens=chunk.usage.prompt_tokens,
                    completion_tokens=chunk.usage.completion_tokens)
        except JobError as err:
            raise job_error(self.tier, err) from err
