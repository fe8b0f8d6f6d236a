"""Typed settings of the gateway (environment prefix `CMESH_GATEWAY_`, or flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.regions import check_other_regions
from services.common.settings import NATS_CREDENTIALS_DOC, ServiceSettings, check_pem_set


class GatewaySettings(ServiceSettings):
    """Peers, policy, prices, limits and auth of one gateway replica."""

    model_config = SettingsConfigDict(env_prefix="CMESH_GATEWAY_", extra="ignore",
                                      validate_default=True)

    nats_url: str | None = Field(
        None, description="NATS server(s), comma-separated: tiers are reached through the "
                          "broker's JetStream queues. Unset: straight to backend_addresses.")
    nats_credentials_file: Path | None = Field(None, description=NATS_CREDENTIALS_DOC)
    backend_addresses: dict[str, str] = Field(
        default_factory=dict,
        description="Tier name -> backend host:port, called directly over gRPC when nats_url "
                    "is unset; every tier of the thresholds file needs one (JSON, e.g. "
                    '\'{"small": "127.0.0.1:50061", "large": "127.0.0.1:50062"}\').')
    cache_address: str | None = Field(
        None, description="Cache service host:port; unset runs without a cache.")
    classifier_address: str | None = Field(
        None, description="Classifier service host:port; unset scores nothing (route and "
                          "hybrid then fall back to the cascade).")
    thresholds_path: Path | None = Field(
        None, description="Thresholds file (`cmesh tune` / `cmesh cascade evaluate` write "
                          "one); unset uses the packaged cascade/artifacts/thresholds.json.")
    policy: Literal["route", "cascade", "hybrid"] = Field(
        "route", description="Policy used when a request names none (the shipped "
                             "thresholds were calibrated for route).")
    tier_prices: dict[str, float] = Field(
        default_factory=lambda: {"small": 0.02, "large": 0.2},
        description="Price per 1,000 tokens (prompt + completion) of each tier, in any one "
                    "cost unit; cost and saving in the metadata use it.")
    api_keys_file: Path | None = Field(
        None, description="File of `<sha256 of key> <tenant>` lines (`cmesh keys add` writes "
                          "one). Required: without it every call is UNAUTHENTICATED.")
    rate_limit_per_s: float = Field(
        20.0, gt=0, description="Sustained requests per second per tenant.")
    rate_limit_burst: int = Field(
        40, ge=1, description="Requests a tenant may make at once before the rate applies.")
    audit_share: float = Field(
        0.0, ge=0, le=1, description="Share of cache hits re-asked, after the answer went "
        "out, to the judge tier (`audit_judge_tier`), whose verdicts give the cache a live "
        "wrong-hit estimate per tenant and tighten a tenant's bound past δ. 0: off.")
    audit_near_miss_share: float = Field(
        0.0, ge=0, le=1, description="Share of near-misses (a candidate just under the "
        "bound) judged the same way: the recall the bound gives up.")
    audit_judge_tier: str = Field(
        "", description="The tier that judges audits (default: the policy's strongest); "
        "through the broker it runs in the batch class.")
    audit_max_in_flight: int = Field(
        4, ge=1, le=1000, description="Audits judged at once; a sampled hit beyond that is "
        "skipped.")
    tier_dead_after_s: float = Field(
        1.5, gt=0, le=60,
        description="Through the broker: a tier none of whose brokers beaconed this long, "
                    "or whose brokers all have no healthy backend replica, is down; its "
                    "requests get UNAVAILABLE naming it at once (health `cascademesh.tier."
                    "<tier>` NOT_SERVING, metric gateway_tier_up 0).")
    tier_stall_s: float = Field(
        2.0, gt=0, le=300,
        description="Through the broker: a job with no chunk or heartbeat this long while "
                    "its tier is down ends with UNAVAILABLE naming the tier.")
    failover_regions: list[str] = Field(
        default_factory=list,
        description="With region, through the broker: the other regions whose tier queues "
                    "take this gateway's jobs, in order, when its own region's queue of a "
                    "tier has no live broker or healthy backend, is full, or fails a job "
                    "midway (JSON list, e.g. '[\"b\"]'; docs/regions.md).")
    failover_wait_s: float = Field(
        10.0, ge=0, le=600,
        description="With failover_regions: an interactive job with no token this long "
                    "after it was queued in a region is cancelled there and goes to the next "
                    "region (0: wait for its deadline; Batch API lines always wait).")
    tier_max_pending: int = Field(
        64, ge=1, le=100_000,
        description="Calls this gateway may have in flight or queued on one tier; one more "
                    "is refused at once (RESOURCE_EXHAUSTED / 429, with a retry-after).")
    tier_concurrency: int = Field(
        8, ge=1, le=100_000,
        description="Calls one tier serves at once (its backends' slots), for the wait "
                    "estimate: pending beyond it queue, each for the measured service time "
                    "shared over these slots.")
    tier_min_start_ms: float = Field(
        100, ge=0, description="Least time a tier call needs to its first token; a call with "
                               "less of its deadline left (after the estimated queue wait) is "
                               "refused before it reaches the broker or a backend.")
    max_prompt_chars: int = Field(8_000, ge=1, description="Longer prompts are rejected.")
    max_context_chars: int = Field(
        32_000, ge=1, description="Longest system prompt plus earlier turns; each turn counts "
                                  "16 characters more than its text, so empty turns add up.")
    max_turns: int = Field(256, ge=0, description="Most earlier turns a request may carry.")
    max_tokens_limit: int = Field(
        512, ge=1, description="Largest sampling.max_tokens a request may ask for (keep it at "
                               "or below every backend's own limit).")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none.")
    default_temperature: float = Field(
        0.0, ge=0, description="Temperature when a request sets none (0 keeps answers "
                               "cacheable).")
    cache_timeout_ms: float = Field(
        500, gt=0, description="Longest wait for a cache lookup; slower is a miss.")
    classifier_timeout_ms: float = Field(
        500, gt=0, description="Longest wait for a classifier score; slower means no score.")
    side_share: float = Field(
        0.25, gt=0, le=1, description="Most of the remaining deadline one side call may use.")
    store_timeout_ms: float = Field(2_000, gt=0, description="Longest wait for a cache store.")
    default_timeout_s: float = Field(
        120.0, gt=0, description="Deadline of a request whose client set none.")
    speculate: bool = Field(
        False, description="Under the route policy, start the first tier's call as soon as "
        "the cache misses, while the classifier scores; a score that routes elsewhere "
        "cancels it before any of it reaches the client (costs a cancelled prefill on "
        "those prompts, saves the score's wait on the others). Off by default: no gain "
        "measured where both tiers share an engine (docs/results/2026-12-07-system-bench-"
        "litellm.md).")
    cache_join_in_flight: bool = Field(
        True, description="A cache miss brings the cache the prompts of its scope this "
        "gateway is answering now; one the verifier calls the same question (the test a hit "
        "passes) follows that answer as it streams instead of generating it again.")
    embed_once: bool = Field(
        True, description="Have the cache return the prompt's embedding and the classifier "
                          "score it (one MiniLM encode per request instead of two); off, the "
                          "two run side by side, each embedding the prompt.")
    confidence_method: Literal["mean", "min"] = Field(
        "mean", description="How an answer's confidence comes from its token logprobs.")
    http_port: int | None = Field(
        None, ge=0, le=65535,
        description="Port of the OpenAI-compatible HTTP door (/v1/chat/completions, ...) on "
                    "`host`; 0 picks a free one; unset: no HTTP door. TLS with tls_cert/"
                    "tls_key, as the gRPC port.")
    http_port_file: Path | None = Field(
        None, description="Where the HTTP door writes its bound port (for http_port 0).")
    http_keep_alive_s: float = Field(
        75.0, gt=0, le=3600,
        description="How long the HTTP door keeps an idle keep-alive connection open. Keep "
                    "it above clients' pool idle time (aiohttp 15 s), so a client never "
                    "sends on a connection the door is closing (uvicorn's 5 s default cost "
                    "the system bench's soak a ServerDisconnectedError).")
    batch_concurrency: int = Field(
        4, ge=1, le=256, description="Lines of Batch API batches this gateway runs at once "
                                     "(the Batch API needs nats_url and http_port).")
    mesh_ca: Path | None = Field(None, description=(
        "PEM CA the internal services' certificates are signed by; set it to call cache, "
        "classifier and backends over TLS."))
    mesh_cert: Path | None = Field(
        None, description="PEM client certificate the gateway presents to internal services "
                          "that require mutual TLS (with mesh_key).")
    mesh_key: Path | None = Field(None, description="PEM private key of mesh_cert.")

    @model_validator(mode="after")
    def _limits_fit(self) -> GatewaySettings:
        check_pem_set(self, cert="mesh_cert", key="mesh_key", ca="mesh_ca",
                      ca_needs_cert=False)
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        check_other_regions(self.region, self.failover_regions, "failover_regions",
                            "the gateway's own is tried first")
        return self

    @property
    def regions(self) -> list[str]:
        """The regions whose tier queues take this gateway's jobs, its own first."""
        return [self.region, *self.failover_regions]
