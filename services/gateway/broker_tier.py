"""A tier served through the broker: the job goes to the tier's JetStream queue,
its chunks come back on the job's reply subject (`services.broker.client`).

Same interface as the direct `BackendTier`, so the orchestrator does not know
which one it has. Leaving the stream early (client cancel, deadline, an
escalation decision) cancels the job on the broker, which aborts the backend call.

When the broker running a job dies while another broker of the tier lives
(`JobOrphaned`), the job is resumed at once as a new job after the tokens
already received, so the answer goes on with nothing repeated or lost instead
of waiting for JetStream to hand the old job over after its ack wait.

Across regions (`regions`: the gateway's own first, then its failover order),
a job goes to the first region whose queue of the tier can take it. It moves
on to the next region, after the tokens already received, when its region has
no live broker or no healthy backend for the tier, refuses it (queue full), or
fails it with UNAVAILABLE midway (its backends died), and, before its first
token, when it waited longer than `failover_wait_s` there (interactive calls
only: a Batch API line is meant to wait behind interactive work). Every call starts
from the own region again, so a region that comes back takes its traffic back.
The deltas say which region served and why not the own (`Delta.region`,
`Delta.failover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from core.generation import Delta
from protos.broker.v1 import broker_pb2
from services.broker.client import BrokerClient, JobError, JobOrphaned
from services.common.convert import chunk_to_delta, generation_request_to_job
from services.common.errors import error_from
from services.gateway.clients import tier_error
from services.gateway.domain import TierCall

log = logging.getLogger(__name__)
MAX_RESUMES = 3  # orphaned by a dying broker this often, a job gives up
FAILOVER_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


def job_error(tier: str, err: JobError) -> Exception:
    """The domain error for a failed or refused job, through the one error table, with
    the field and the wait the job error carries as data."""
    retry = err.retry_after_ms / 1000 if err.retry_after_ms else None
    return tier_error(tier, error_from(err.kind, err.message, field=err.field or None,
                                       retry_after_s=retry))


class FirstTokenLate(Exception):
    """No token within `failover_wait_s` of the submit, with another region to try."""


class BrokerTier:
    """One tier behind the broker, over a shared `BrokerClient` (NATS connection)."""

    def __init__(self, tier: str, client: BrokerClient, regions: Sequence[str] = ("",),
                 failover_wait_s: float = 0.0) -> None:
        if not regions:
            raise ValueError("regions: at least one ('' for no regions)")
        self.tier = tier
        self.client = client
        self.regions = list(regions)
        self.failover_wait_s = failover_wait_s

    async def generate(self, call: TierCall) -> AsyncIterator[Delta]:
        request = call.request
        tokens, text = list(request.continue_token_ids), request.continue_text
        end = None if call.timeout_s is None else time.monotonic() + call.timeout_s
        passed: list[str] = []  # "<region>: why", of each region given up on
        place, resumes = 0, 0
        while True:
            region = self.regions[place]
            message = generation_request_to_job(
                replace(request, continue_token_ids=tuple(tokens), continue_text=text),
                self.tier, tenant=call.tenant, batch=call.batch, stream=True)
            message.region = region
            if tokens or resumes or place:  # JetStream stores one job per id: this one is new
                message.job_id = f"{message.job_id or 'job'}.{uuid.uuid4().hex[:8]}"
            left = None if end is None else max(0.001, end - time.monotonic())
            last = place == len(self.regions) - 1
            got = False
            try:
                stream = await self.client.submit(message, deadline_s=left)
                async with contextlib.aclosing(aiter(stream)) as chunks:  # left: cancelled
                    while True:
                        try:
                            chunk = await self._next(
                                chunks, first=not got and not last and not call.batch)
                        except StopAsyncIteration:
                            return
                        delta = chunk_to_delta(chunk)
                        if not got:
                            delta = replace(delta, region=region, failover="; ".join(passed))
                            got = True
                        tokens += delta.token_ids
                        text += delta.text
                        yield delta
            except FirstTokenLate:
                passed.append(f"{region}: no token within {self.failover_wait_s:g} s")
            except JobOrphaned as err:
                resumes += 1
                if resumes > MAX_RESUMES:
                    raise job_error(self.tier, err) from err
                log.warning("%s; resuming after %d tokens", err.message, len(tokens))
                continue
            except JobError as err:
                if last or err.code not in FAILOVER_CODES:
                    raise job_error(self.tier, err) from err
                passed.append(f"{region}: {err.message}")
            log.info("tier %s: %s; failing over to region %r after %d tokens",
                     self.tier, passed[-1], self.regions[place + 1], len(tokens))
            place += 1

    async def _next(self, chunks: AsyncIterator[broker_pb2.JobChunk],
                    first: bool) -> broker_pb2.JobChunk:
        """The stream's next chunk; the first one within `failover_wait_s` when `first`."""
        if not first or self.failover_wait_s <= 0:
            return await anext(chunks)
        try:
            async with asyncio.timeout(self.failover_wait_s):
                return await anext(chunks)
        except TimeoutError:
            raise FirstTokenLate from None
