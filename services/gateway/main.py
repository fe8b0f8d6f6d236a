"""Gateway wiring: settings -> peer channels -> orchestrator + admission -> doors.

Both doors (gRPC `Ask`, and the OpenAI-compatible HTTP door when `http_port`
is set) are translators over the same orchestrator and admission. The HTTP
door starts after the build, before the node reports SERVING, and stops
(draining its open requests) before the gRPC server and the orchestrator's
in-flight answers are closed.

`GatewayNode` is the whole service as one async context manager (tests run it
in-process against real peers); `main()` runs one until SIGTERM/SIGINT.
A missing peer address for a tier of the thresholds file stops start-up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence

import grpc
from fastapi import FastAPI

from cache.keys import Sampling, Scope
from cascade.policy import Policy
from cascade.thresholds import load_thresholds
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.broker.beacons import TierWatch
from services.common.natsauth import connect_options, refuse_passwords_in_argv
from services.common.node import Registration, ServiceNode, cancel_task, full_name, serve
from services.common.settings import PEER_CHANNEL_OPTIONS, channel_credentials
from services.gateway.admission import Admission, RequestIdFilter
from services.gateway.audit import Auditor, TierJudge
from services.gateway.auth import load_keys
from services.gateway.batch.runner import BatchRunner
from services.gateway.clients import BackendTier, GrpcCache, GrpcClassifier
from services.gateway.domain import CacheClient, ClassifierClient, Limits, TierClient
from services.gateway.frontends.grpc import GatewayServicer
from services.gateway.frontends.http import HttpServer
from services.gateway.frontends.openai import OpenAIDoor
from services.gateway.metrics import GatewayMetrics
from services.gateway.orchestrator import Orchestrator, OrchestratorConfig
from services.gateway.settings import GatewaySettings
from services.gateway.tier_admission import AdmittedTier, TierAdmission
from services.gateway.tier_health import report_tiers

SERVICE_NAME = full_name(gateway_pb2, "Gateway")
log = logging.getLogger("services.gateway")
WARM_UP_TIMEOUT_S = 30.0


def orchestrator_config(s: GatewaySettings) -> OrchestratorConfig:
    """The orchestrator's view of the settings."""
    return OrchestratorConfig(
        tier_prices=dict(s.tier_prices),
        limits=Limits(max_prompt_chars=s.max_prompt_chars,
                      max_context_chars=s.max_context_chars, max_turns=s.max_turns,
                      max_tokens_limit=s.max_tokens_limit),
        default_temperature=s.default_temperature, default_max_tokens=s.default_max_tokens,
        cache_timeout_s=s.cache_timeout_ms / 1000,
        classifier_timeout_s=s.classifier_timeout_ms / 1000,
        store_timeout_s=s.store_timeout_ms / 1000, side_share=s.side_share,
        default_timeout_s=s.default_timeout_s, confidence_method=s.confidence_method,
        embed_once=s.embed_once, speculate=s.speculate, join_in_flight=s.cache_join_in_flight)


class GatewayNode(ServiceNode[GatewaySettings]):
    """One gateway replica; `tiers` replaces the tier clients (tests' fakes)."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings,
                 tiers: Mapping[str, TierClient] | None = None) -> None:
        super().__init__(settings)
        self._tiers = tiers
        self.orchestrator: Orchestrator | None = None
        self.admission: Admission | None = None
        self.metrics: GatewayMetrics | None = None
        self.http: HttpServer | None = None
        self.batches: BatchRunner | None = None
        self.tier_watch: TierWatch | None = None  # through the broker: its tier beacons

    async def _channel(self, address: str) -> grpc.aio.Channel:
        """A channel to an internal service: TLS (mutual with mesh_cert) when mesh_ca is set."""
        s = self.settings
        if s.mesh_ca is None:
            channel = grpc.aio.insecure_channel(address, options=PEER_CHANNEL_OPTIONS)
        else:
            creds = channel_credentials(s.mesh_ca, s.mesh_cert, s.mesh_key)
            channel = grpc.aio.secure_channel(address, creds, options=PEER_CHANNEL_OPTIONS)
        return await self.stack.enter_async_context(channel)

    async def _tier_clients(self, policy: Policy) -> dict[str, TierClient]:
        """The given tier clients as they are; the ones built here (broker or direct gRPC)
        each behind its tier's deadline-aware admission."""
        s = self.settings
        given = dict(self._tiers or {})
        tiers: dict[str, TierClient] = {}
        if s.nats_url and not given:
            from services.broker.client import BrokerClient
            from services.gateway.broker_tier import BrokerTier

            self.tier_watch = TierWatch(s.tier_dead_after_s)
            broker = await self.stack.enter_async_context(BrokerClient(
                [u.strip() for u in s.nats_url.split(",") if u.strip()],
                connect_options=connect_options("gateway", s.nats_credentials_file),
                tier_watch=self.tier_watch, stall_s=s.tier_stall_s))
            tiers = {tier: BrokerTier(tier, broker, s.regions, s.failover_wait_s)
                     for tier in policy.tiers}
        for tier in policy.tiers:
            if tier not in tiers and tier not in given:
                if tier not in s.backend_addresses:
                    raise ValueError(f"backend_addresses: no address for tier {tier!r}")
                tiers[tier] = BackendTier(tier, await self._channel(s.backend_addresses[tier]))
        return {**given, **{tier: AdmittedTier(client, TierAdmission(
            tier, s.tier_max_pending, s.tier_concurrency, s.tier_min_start_ms / 1000))
            for tier, client in tiers.items()}}

    def _auditor(self, policy: Policy, cache: CacheClient | None,
                 tiers: Mapping[str, TierClient]) -> Auditor | None:
        """The cache audit, when a share of hits or near-misses is to be judged."""
        s = self.settings
        if s.audit_share <= 0 and s.audit_near_miss_share <= 0:
            return None
        if not isinstance(cache, GrpcCache):
            raise ValueError("audit_share: needs the cache service (cache_address)")
        judge_tier = s.audit_judge_tier or policy.tiers[-1]
        if judge_tier not in tiers:
            raise ValueError(f"audit_judge_tier: no tier {judge_tier!r}")
        return Auditor(TierJudge(tiers[judge_tier]), cache, s.audit_share,
                       s.audit_near_miss_share, s.audit_max_in_flight)

    async def build(self) -> list[Registration]:
        s = self.settings
        if s.api_keys_file is None:
            raise ValueError("api_keys_file is required (cmesh keys add writes one)")
        keys = load_keys(s.api_keys_file)
        policy = Policy(s.policy, load_thresholds(s.thresholds_path))
        tiers = await self._tier_clients(policy)
        cache: CacheClient | None = None
        if s.cache_address:
            cache = GrpcCache(await self._channel(s.cache_address))
        classifier: ClassifierClient | None = None
        if s.classifier_address:
            classifier = GrpcClassifier(await self._channel(s.classifier_address))
        self.metrics = metrics = GatewayMetrics(self.registry)
        auditor = self._auditor(policy, cache, tiers)
        self.orchestrator = orchestrator = Orchestrator(
            policy, cache, classifier, tiers, orchestrator_config(s), observer=metrics,
            auditor=auditor)
        if auditor is not None:  # after the answers in flight (callbacks run in reverse)
            self.stack.push_async_callback(auditor.drain)
        # Closed before the channels: answers in flight finish and their stores land.
        self.stack.push_async_callback(orchestrator.flights.drain, s.grace_seconds)
        self.admission = admission = Admission(keys, s.rate_limit_per_s, s.rate_limit_burst)
        return [Registration(GatewayServicer(orchestrator, admission, metrics),
                             gateway_pb2_grpc.add_GatewayServicer_to_server, SERVICE_NAME)]

    async def warm_up(self) -> None:
        """One lookup and one score through the real clients before SERVING: the first
        request then finds the channels connected and the client paths warm. Read-only
        (a lookup of a tenant no key maps to, nothing stored); a peer that does not answer
        is logged, not fatal: side calls are best-effort at run time too."""
        assert self.orchestrator is not None
        o = self.orchestrator
        scope = Scope(tenant="gateway-warm-up", sampling=Sampling(temperature=0.0))
        prompt = "What is the capital of France?"
        timeout = WARM_UP_TIMEOUT_S
        vector: tuple[float, ...] = ()
        try:
            if o.cache is not None:
                vector = (await o.cache.lookup(scope, prompt, timeout, True)).vector
            if o.classifier is not None:
                await o.classifier.score(scope, prompt, timeout, vector)
        except Exception as exc:
            log.warning("gateway warm-up: a side call failed (%r); serving anyway", exc)
        if self.tier_watch is not None and self.metrics is not None:
            assert self.service is not None
            task = asyncio.create_task(report_tiers(
                self.tier_watch, sorted(o.tiers), self.service.set_part_serving,
                self.metrics.tier_up, regions=self.settings.regions), name="gateway-tier-health")
            self.stack.push_async_callback(cancel_task, task)
        await self._start_http_door()

    async def _start_http_door(self) -> None:
        """The HTTP door (when `http_port` is set), after the warm-up; it closes first on
        the way out."""
        s = self.settings
        if s.http_port is None:
            return
        assert self.orchestrator is not None and self.admission is not None
        door = OpenAIDoor(self.orchestrator, self.admission, self.metrics,
                          ready=lambda: not self._draining)
        app = door.app()
        if s.nats_url:
            await self._batch_api(app, door)
        self.http = await self.stack.enter_async_context(HttpServer(
            app, s.host, s.http_port, grace_s=s.grace_seconds, keep_alive_s=s.http_keep_alive_s,
            tls_cert=s.tls_cert, tls_key=s.tls_key, port_file=s.http_port_file))

    async def _batch_api(self, app: FastAPI, door: OpenAIDoor) -> None:
        """Files and batches in JetStream; unfinished batches resume here. The runner stops
        after the HTTP door (no new batch), and leaves its batches resumable."""
        import nats

        from services.gateway.batch.store import BatchStore
        from services.gateway.frontends.openai_batch import add_batch_routes

        assert self.settings.nats_url and self.orchestrator is not None
        nc = await nats.connect(servers=[u.strip() for u in self.settings.nats_url.split(",")],
                                max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                                **connect_options("gateway", self.settings.nats_credentials_file))
        self.stack.push_async_callback(nc.close)
        store = await BatchStore(nc.jetstream()).open()
        self.batches = runner = BatchRunner(store, self.orchestrator,
                                            self.settings.batch_concurrency)
        self.stack.push_async_callback(runner.close)
        add_batch_routes(app, door, store, runner)
        await runner.resume()

    @property
    def http_base_url(self) -> str:
        """The HTTP door's OpenAI base URL (…/v1)."""
        assert self.http is not None, "no HTTP door (http_port unset)"
        return self.http.base_url


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve gateway` and `python -m services.gateway`."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args = list(sys.argv[1:] if argv is None else argv)
    refuse_passwords_in_argv(args)
    # pydantic-settings reads `_cli_parse_args` at run time (see services.common.node).
    settings = GatewaySettings(_cli_parse_args=args)  # type: ignore[call-arg]
    asyncio.run(serve(GatewayNode(settings)))


if __name__ == "__main__":
    main()
