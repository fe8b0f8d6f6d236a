"""Typed settings of the broker service (env prefix CMESH_BROKER_, or flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.broker.jetstream import QueueLimits
from services.broker.subjects import check_tier
from services.common.settings import NATS_CREDENTIALS_DOC, ServiceSettings, check_pem_set


def parse_backends(spec: str) -> dict[str, list[str]]:
    """`small=h:1,h:2;large=h:3` -> {"small": ["h:1", "h:2"], "large": ["h:3"]}."""
    tiers: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        tier, sep, addresses = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r}: expected tier=host:port[,host:port...]")
        replicas = [a.strip() for a in addresses.split(",") if a.strip()]
        if not replicas:
            raise ValueError(f"tier {tier!r} has no replica address")
        tiers[check_tier(tier.strip())] = replicas
    return tiers


class BrokerSettings(ServiceSettings):
    """The NATS queue, the backends per tier, and how jobs are taken and scheduled."""

    model_config = SettingsConfigDict(env_prefix="CMESH_BROKER_", extra="ignore")

    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server(s), comma-separated for a cluster.")
    nats_credentials_file: Path | None = Field(None, description=NATS_CREDENTIALS_DOC)
    backends: str = Field(
        ..., min_length=3,
        description="Backend replicas per tier: 'small=host:port,host:port;large=host:port'.")
    queue_max_jobs: int = Field(1000, ge=1, description="Queued jobs per tier; more are refused.")
    tenant_max_jobs: int = Field(
        100, ge=1, description="Queued jobs per tenant and class: bounds how far one tenant's "
        "flood can push another tenant's job back.")
    batch_share: float = Field(
        0.1, ge=0, le=1, description="Share of starts batch jobs get while interactive ones wait.")
    stream_replicas: int = Field(1, ge=1, le=5, description="JetStream replicas of each stream.")
    ack_wait_s: float = Field(
        30.0, gt=0, le=3600,
        description="A job with no sign of life from its broker this long is redelivered.")
    max_deliver: int = Field(5, ge=1, le=100, description="Deliveries before a job is dropped.")
    max_batch: int = Field(16, ge=1, le=256, description="Jobs per JetStream fetch at most.")
    lookahead: int = Field(
        4, ge=0, le=256, description="Jobs fetched beyond free backend slots, so the scheduler "
        "has a choice of class and tenant.")
    pull_wait_s: float = Field(1.0, gt=0, le=30, description="Longest wait of one fetch.")
    max_slots_per_replica: int = Field(
        0, ge=0, le=4096, description="Jobs this broker runs at once per replica; 0 means the "
        "replica's batch size (max_num_seqs).")
    load_poll_s: float = Field(0.25, gt=0, le=30, description="Backend load poll period.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Replicas one delivery may try before going back to the queue.")
    nak_delay_s: float = Field(1.0, ge=0, le=300, description="Redelivery delay after a failure.")
    failover_wait_s: float = Field(
        10.0, ge=0, le=300, description="How long a failed-over job waits for a free replica.")
    affinity_min_chars: int = Field(
        200, ge=0, description="System prompt + first turn length that makes a prefix worth "
        "keeping on one replica.")
    dispatch: Literal["scored", "random"] = Field(
        "scored", description="scored: free slots, queue depth and prefix affinity; random: "
        "any replica with room (a baseline for benchmarks).")
    heartbeat_s: float = Field(
        0.5, gt=0, le=10, description="Period of the tier beacon (`broker.tier.<tier>`) and "
        "of the heartbeat sent to each job this broker holds.")
    down_after_s: float = Field(
        2.0, ge=0, le=60, description="A tier whose every backend replica has been unhealthy "
        "this long fails its held jobs with UNAVAILABLE naming the tier (not retried until "
        "their deadline).")
    cancel_memory_s: float = Field(
        600.0, ge=1, description="How long a cancel for a job not seen yet is remembered.")

    mesh_ca: Path | None = Field(
        None, description="PEM CA the backends' certificates are signed by: call them over "
                          "TLS (mutual with mesh_cert/mesh_key).")
    mesh_cert: Path | None = Field(
        None, description="PEM client certificate the broker presents to the backends.")
    mesh_key: Path | None = Field(None, description="PEM private key of mesh_cert.")

    @field_validator("backends")
    @classmethod
    def _backends_parse(cls, value: str) -> str:
        parse_backends(value)
        return value

    @model_validator(mode="after")
    def _tenant_fits(self) -> BrokerSettings:
        check_pem_set(self, cert="mesh_cert", key="mesh_key", ca="mesh_ca",
                      ca_needs_cert=False)
        if self.tenant_max_jobs > self.queue_max_jobs:
            raise ValueError("tenant_max_jobs must not exceed queue_max_jobs")
        return self

    @property
    def tiers(self) -> dict[str, list[str]]:
        return parse_backends(self.backends)

    @property
    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def limits(self) -> QueueLimits:
        return QueueLimits(
            max_jobs=self.queue_max_jobs, tenant_max_jobs=self.tenant_max_jobs,
            replicas=self.stream_replicas, ack_wait_s=self.ack_wait_s,
            max_deliver=self.max_deliver, region=self.region,
        )
