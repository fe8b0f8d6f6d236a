"""A tier served through the broker: the job goes to the tier's JetStream queue,
its chunks come back on the job's reply subject (`services.broker.client`).

Same interface as the direct `BackendTier`, so the orchestrator does not know
which one it has. Leaving the stream early (client cancel, deadline, an
escalation decision) cancels the job on the broker, which aborts the backend call.

When the broker running a job dies while another broker of the tier lives
(`JobOrphaned`), the job is resumed at once as a new job after the tokens
already received, so the answer goes on with nothing repeated or lost instead
of waiting for JetStream to hand the old job over after its ack wait.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from core.generation import Delta
from services.broker.client import BrokerClient, JobError, JobOrphaned
from services.common.convert import chunk_to_delta, generation_request_to_job
from services.common.errors import error_from
from services.gateway.clients import tier_error
from services.gateway.domain import TierCall

log = logging.getLogger(__name__)
MAX_RESUMES = 3  # orphaned by a dying broker this often, a job gives up


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
        request = call.request
        tokens, text = list(request.continue_token_ids), request.continue_text
        end = None if call.timeout_s is None else time.monotonic() + call.timeout_s
        for resume in range(MAX_RESUMES + 1):
            message = generation_request_to_job(
                replace(request, continue_token_ids=tuple(tokens), continue_text=text),
                self.tier, tenant=call.tenant, batch=call.batch, stream=True)
            if tokens or resume:  # JetStream stores one job per id: a continuation is new
                message.job_id = f"{message.job_id or 'job'}.{uuid.uuid4().hex[:8]}"
            left = None if end is None else max(0.001, end - time.monotonic())
            try:
                stream = await self.client.submit(message, deadline_s=left)
                async for chunk in stream:
                    delta = chunk_to_delta(chunk)
                    tokens += delta.token_ids
                    text += delta.text
                    yield delta
                return
            except JobOrphaned as err:
                if resume == MAX_RESUMES:
                    raise job_error(self.tier, err) from err
                log.warning("%s; resuming after %d tokens", err.message, len(tokens))
            except JobError as err:
                raise job_error(self.tier, err) from err
