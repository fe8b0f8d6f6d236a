"""Gateway wiring: settings -> peer channels -> orchestrator -> servicer + auth -> server.

`GatewayNode` is the whole service as one async context manager (tests run it
in-process against real peers); `main()` runs one until SIGTERM/SIGINT.
A missing peer address for a tier of the thresholds file stops start-up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Self

import grpc
from prometheus_client import CollectorRegistry

from cascade.policy import Policy
from cascade.thresholds import load_thresholds
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.server import GrpcService, wait_for_signal
from services.common.tracing import init_tracing
from services.gateway.auth import AuthInterceptor, RequestIdFilter, load_keys
from services.gateway.clients import BackendTier, GrpcCache, GrpcClassifier
from services.gateway.domain import CacheClient, ClassifierClient, Limits, TierClient
from services.gateway.metrics import GatewayMetrics
from services.gateway.orchestrator import Orchestrator, OrchestratorConfig
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import GatewaySettings

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
log = logging.getLogger("services.gateway")


def orchestrator_config(s: GatewaySettings) -> OrchestratorConfig:
    """The orchestrator's view of the settings."""
    return OrchestratorConfig(
        tier_prices=dict(s.tier_prices),
        limits=Limits(max_prompt_chars=s.max_prompt_chars,
                      max_context_chars=s.max_context_chars,
                      max_tokens_limit=s.max_tokens_limit),
        default_temperature=s.default_temperature, default_max_tokens=s.default_max_tokens,
        cache_timeout_s=s.cache_timeout_ms / 1000,
        classifier_timeout_s=s.classifier_timeout_ms / 1000,
        store_timeout_s=s.store_timeout_ms / 1000, side_share=s.side_share,
        default_timeout_s=s.default_timeout_s, confidence_method=s.confidence_method,
        embed_once=s.embed_once)


class GatewayNode:
    """One gateway replica; `tiers` replaces the direct backend clients (e.g. the broker's)."""

    def __init__(self, settings: GatewaySettings,
                 tiers: Mapping[str, TierClient] | None = None) -> None:
        self.settings = settings
        self._tiers = tiers
        self._stack = AsyncExitStack()
        self.orchestrator: Orchestrator | None = None
        self.service: GrpcService | None = None
        self.metrics: GatewayMetrics | None = None

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.port

    @property
    def address(self) -> str:
        assert self.service is not None
        return self.service.address

    async def _channel(self, address: str) -> grpc.aio.Channel:
        """A channel to an internal service: TLS (mutual with mesh_cert) when mesh_ca is set."""
        s = self.settings
        if s.mesh_ca is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=s.mesh_ca.read_bytes(),
                private_key=s.mesh_key.read_bytes() if s.mesh_key else None,
                certificate_chain=s.mesh_cert.read_bytes() if s.mesh_cert else None)
            channel = grpc.aio.secure_channel(address, creds)
        return await self._stack.enter_async_context(channel)

    async def __aenter__(self) -> Self:
        s = self.settings
        init_tracing("gateway", s.otlp_endpoint)  # before the first channel is made
        try:
            if s.api_keys_file is None:
                raise ValueError("api_keys_file is required (cmesh keys add writes one)")
            keys = load_keys(s.api_keys_file)
            policy = Policy(s.policy, load_thresholds(s.thresholds_path))
            tiers = dict(self._tiers or {})
            if s.nats_url and not tiers:
                from services.broker.client import BrokerClient
                from services.gateway.broker_tier import BrokerTier

                broker = await self._stack.enter_async_context(BrokerClient(
                    [u.strip() for u in s.nats_url.split(",") if u.strip()]))
                tiers = {tier: BrokerTier(tier, broker) for tier in policy.tiers}
            for tier in policy.tiers:
                if tier not in tiers:
                    if tier not in s.backend_addresses:
                        raise ValueError(f"backend_addresses: no address for tier {tier!r}")
                    tiers[tier] = BackendTier(tier, await self._channel(
                        s.backend_addresses[tier]))
            cache: CacheClient | None = None
            if s.cache_address:
                cache = GrpcCache(await self._channel(s.cache_address))
            classifier: ClassifierClient | None = None
            if s.classifier_address:
                classifier = GrpcClassifier(await self._channel(s.classifier_address))
            registry = CollectorRegistry()
            self.metrics = metrics = GatewayMetrics(registry)
            self.orchestrator = Orchestrator(policy, cache, classifier, tiers,
                                             orchestrator_config(s), observer=metrics)
            servicer = GatewayServicer(self.orchestrator, metrics)
            auth = AuthInterceptor(keys, s.rate_limit_per_s, s.rate_limit_burst,
                                   on_reject=lambda code: metrics.errors.labels(code).inc())
            self.service = GrpcService(
                "gateway", s,
                register=lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(
                    servicer, server),
                service_names=[SERVICE_NAME], registry=registry, interceptors=[auth])
            await self._stack.enter_async_context(self.service)
            await self.service.set_serving(True)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            await self.service.set_serving(False)
            await self.service.drain()
        if self.orchestrator is not None:
            await self.orchestrator.flights.drain(self.settings.grace_seconds)
        await self._stack.aclose()


async def serve(settings: GatewaySettings) -> None:
    """Run one replica until SIGTERM or SIGINT, then drain."""
    async with GatewayNode(settings) as node:
        log.info("gateway serving on %s", node.address)
        await wait_for_signal()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `cmesh serve gateway` and `python -m services.gateway`."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args = list(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(GatewaySettings(_cli_parse_args=args)))  # type: ignore[call-arg]


if __name__ == "__main__":
    main()
