"""Names on NATS shared by the broker and its client (no NATS import).

A job of tier `small`, class `batch`, tenant `acme` is published on
`gen.small.batch.acme`; the tier's stream `GEN_SMALL` holds `gen.small.>`.
The tenant token lets the stream cap each tenant's queued jobs
(`max_msgs_per_subject`), which is what keeps one tenant's flood from
filling the queue ahead of everyone else.

Each broker announces every tier it serves on `broker.tier.<tier>` (a
`TierBeacon` per `heartbeat_s`): who is alive, and with how many healthy
backend replicas.

In a supercluster every region has its own queue of each tier, so a region's
jobs, stream and beacons carry it: `rgen.<region>.<tier>.<class>.<tenant>` in
`GEN_<TIER>_<REGION>`, beacons on `broker.tier.<tier>.<region>` (the `r` keeps
regional and unregional subjects from ever overlapping; docs/regions.md).
"""

from __future__ import annotations

import hashlib
import re

from core.errors import FieldError
from protos.broker.v1 import broker_pb2
from services.broker.scheduler import JobClass
from services.common.regions import check_region, regional_stream

CANCEL_SUBJECT = "broker.cancel"
BEACONS = "broker.tier.>"  # every tier's beacons, of every region (`beacon_subject`)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_tier(tier: str) -> str:
    if not _TOKEN.match(tier):
        raise FieldError("tier", "1-64 characters of A-Z a-z 0-9 _ -")
    return tier


def tenant_token(tenant: str) -> str:
    """A subject token for any tenant name (a digest when it has other characters)."""
    if not tenant:
        return "_"
    if _TOKEN.match(tenant):
        return tenant
    return "h" + hashlib.blake2b(tenant.encode(), digest_size=10).hexdigest()


def queue_root(tier: str, region: str = "") -> str:
    """The subject prefix of one queue: `gen.<tier>`, or `rgen.<region>.<tier>`."""
    if region:
        return f"rgen.{check_region(region)}.{check_tier(tier)}"
    return f"gen.{check_tier(tier)}"


def job_subject(tier: str, job_class: str, tenant: str, region: str = "") -> str:
    return f"{queue_root(tier, region)}.{job_class}.{tenant_token(tenant)}"


def beacon_subject(tier: str, region: str = "") -> str:
    """Where the brokers of `tier` (in `region`) announce it (`TierBeacon`, core NATS)."""
    base = f"broker.tier.{check_tier(tier)}"
    return f"{base}.{check_region(region)}" if region else base


def class_filter(tier: str, job_class: str, region: str = "") -> str:
    return f"{queue_root(tier, region)}.{job_class}.*"


def job_class_of(job: broker_pb2.GenerateJob) -> JobClass:
    """The class a job queues in: batch for `PRIORITY_BATCH`, else interactive."""
    return "batch" if job.priority == broker_pb2.PRIORITY_BATCH else "interactive"


def stream_name(tier: str, region: str = "") -> str:
    return regional_stream(f"GEN_{check_tier(tier).upper().replace('-', '_')}", region)


def consumer_name(tier: str, job_class: str) -> str:
    return f"broker-{tier}-{job_class}"
