"""Typed settings of the cache service (environment prefix `CMESH_CACHE_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from cache.audit import AuditConfig
from cache.core import CacheConfig
from services.cache.log import LogConfig, PeerLog
from services.common.natsauth import connect_options
from services.common.regions import check_other_regions, regional_stream, regional_subject
from services.common.settings import NATS_CREDENTIALS_DOC, ServiceSettings


class CacheSettings(ServiceSettings):
    """Everything the cache service reads from its environment.

    With `region` set the log is `<stream>_<REGION>` on `<subject>.<region>` (dead
    letters on `<dead_subject>.<region>`), placed in that region, and sources the logs
    of `peer_regions` (docs/regions.md).
    """

    model_config = SettingsConfigDict(env_prefix="CMESH_CACHE_", extra="ignore",
                                      validate_default=True)

    nats_url: str | None = Field(
        None, description="JetStream for the event log; unset keeps entries in memory only.")
    nats_credentials_file: Path | None = Field(None, description=NATS_CREDENTIALS_DOC)
    model_path: Path | None = Field(
        None, description="Local sentence-transformers folder; unset uses the packaged MiniLM.")
    verifier_path: Path | None = Field(
        None, description="Verifier artifact folder; unset uses cache/artifacts/verifier.")
    calibration_path: Path | None = Field(
        None, description="δ -> bound table from `cmesh cache calibrate`; unset uses the "
                          "table shipped with the verifier.")
    lookup_threads: int = Field(
        1, ge=1, le=64,
        description="Math threads (torch, BLAS) of the lookup worker and of the embedding "
                    "batcher (stores, embed-once lookups). 1: one prompt's encode is no "
                    "faster on two, and beside vLLM on two cores the threads' OpenMP "
                    "barriers stalled each encode ~20x (see core.embedder.limit_threads).")
    delta: float = Field(0.02, gt=0, lt=0.5,
                         description="Target wrong-hit share of hits; the hit bound derives "
                                     "from it on the verifier's calibration data.")
    similarity_floor: float = Field(0.55, ge=-1, le=1,
                                    description="Cosine below which a neighbour is not even "
                                                "shown to the verifier (it only saves work).")
    top_k: int = Field(4, ge=1, le=64, description="Neighbours the verifier judges per lookup.")
    rival_window: float = Field(
        0.1, ge=0.0, le=2.0,
        description="Of those, only the ones within this cosine of the nearest are judged.")
    ttl_s: float = Field(86_400.0, gt=0, description="Entry lifetime; also the stream max age.")
    max_entries_per_namespace: int = Field(10_000, ge=1,
                                           description="LRU eviction past this many entries.")
    hnsw_from: int = Field(20_000, ge=1, description="Namespace size at which the exact "
                                                      "index is rebuilt as HNSW.")
    allow_sampling: bool = Field(False, description="Cache answers sampled at temperature > 0.")
    use_gpu: bool = Field(True, description="Put indices on a GPU when faiss-gpu sees one.")
    max_prompt_chars: int = Field(8_000, ge=1, description="Longer prompts are rejected.")
    max_answer_chars: int = Field(200_000, ge=1, description="Longer answers are rejected.")
    max_batch: int = Field(32, ge=1, le=1024, description="Micro-batch size for embedding.")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000,
        description="How long a request may wait for batch mates; 0 batches only what is "
                    "already queued (lookups that arrive while a batch runs form the next). "
                    "5 ms added 6-10 ms to every lone lookup, a gateway miss's critical path.")
    stream: str = Field("CMESH_CACHE", description="JetStream stream of cache events.")
    subject: str = Field("cmesh.cache.log", description="Subject the events are published on.")
    peer_regions: list[str] = Field(
        default_factory=list,
        description="With region: the other regions whose cache logs this region's log "
                    "sources, so their stores hit here (JSON list, e.g. '[\"eu\"]'). "
                    "Every region lists all the others.")
    stream_max_bytes: int = Field(1 << 30, ge=1 << 20, description="Stream size bound.")
    max_pending_writes: int = Field(10_000, ge=1,
                                    description="Events buffered while NATS is unreachable; "
                                                "past this, writes are refused (counted).")
    when_log_unavailable: Literal["buffer", "refuse"] = Field(
        "buffer", description="With NATS unreachable: 'buffer' answers writes with "
                              "durable=false and publishes them once NATS is back; 'refuse' "
                              "answers UNAVAILABLE.")
    publish_timeout_s: float = Field(2.0, gt=0, le=60,
                                     description="How long a write waits for the JetStream ack "
                                                 "before it counts as not durable (or refused).")
    max_publish_tries: int = Field(5, ge=1, le=100,
                                   description="Rejections of one event by the stream before it "
                                               "goes to the dead-letter subject.")
    dead_subject: str = Field("cmesh.cache.dead",
                              description="Dead-letter subject for events that cannot be "
                                          "published or applied.")
    max_event_bytes: int = Field(-1, ge=-1, description="Largest event the stream takes "
                                                        "(-1: the server's limit).")
    sweep_interval_s: float = Field(30.0, gt=0, description="How often expired entries go.")
    audit_window: int = Field(
        200, ge=1, le=100_000, description="A tenant's latest audited hits that estimate its "
        "wrong-hit share (the gateway's `audit_share` sends them; `Audit` RPC).")
    audit_min_verdicts: int = Field(
        20, ge=1, description="Audited hits a tightened bound needs before it may relax.")
    near_miss_margin: float = Field(
        0.2, ge=0, le=1, description="A miss whose best candidate's probability is this "
        "close under the bound is a near-miss: its candidate goes back for the audit.")

    @model_validator(mode="after")
    def _peers_beside_region(self) -> CacheSettings:
        check_other_regions(self.region, self.peer_regions, "peer_regions",
                            "the stream they are sourced into")
        return self

    def cache_config(self) -> CacheConfig:
        """The domain's view of these settings."""
        return CacheConfig(delta=self.delta, similarity_floor=self.similarity_floor,
                           top_k=self.top_k, rival_window=self.rival_window,
                           ttl_s=self.ttl_s,
                           max_entries_per_namespace=self.max_entries_per_namespace,
                           hnsw_from=self.hnsw_from, allow_sampling=self.allow_sampling,
                           use_gpu=self.use_gpu, near_miss_margin=self.near_miss_margin,
                           audit=AuditConfig(window=self.audit_window,
                                             min_verdicts=self.audit_min_verdicts))

    def log_config(self, url: str) -> LogConfig:
        """The event log's view of these settings (on JetStream at `url`)."""
        region = self.region
        return LogConfig(url=url, stream=regional_stream(self.stream, region),
                         subject=regional_subject(self.subject, region),
                         dead_subject=regional_subject(self.dead_subject, region),
                         region=region, follow_subject=f"{self.subject}.*" if region else "",
                         sources=tuple(PeerLog(peer, regional_stream(self.stream, peer),
                                               regional_subject(self.subject, peer))
                                       for peer in self.peer_regions),
                         max_age_s=self.ttl_s,
                         max_bytes=self.stream_max_bytes, max_event_bytes=self.max_event_bytes,
                         max_pending=self.max_pending_writes,
                         when_unavailable=self.when_log_unavailable,
                         publish_timeout_s=self.publish_timeout_s,
                         max_tries=self.max_publish_tries,
                         connect_options=connect_options("cache", self.nats_credentials_file))
