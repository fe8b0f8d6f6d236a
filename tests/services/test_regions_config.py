"""Region settings and server configs (pure: no server started)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from services.broker.jetstream import stream_config
from services.broker.settings import BrokerSettings
from services.cache.log import PeerLog
from services.cache.settings import CacheSettings
from services.common.natsd import ClusterBlock, GatewayBlock, NatsUser, server_config
from services.common.regions import Supercluster, regional_stream, regional_subject


def test_a_regional_server_config_has_its_cluster_gateways_and_users() -> None:
    config = json.loads(server_config(
        4222, "/tmp/s", [NatsUser("cache", "pw", publish=["cmesh.cache.log.eu"])],
        server_name="eu-0", monitor_port=8222,
        cluster=ClusterBlock("eu", 6222, ["nats://127.0.0.1:6222", "nats://127.0.0.1:6223"]),
        gateway=GatewayBlock("eu", 7222, {"eu": ["nats://127.0.0.1:7222"],
                                          "us": ["nats://127.0.0.1:7333"]})))
    assert config["server_name"] == "eu-0" and config["http"] == "127.0.0.1:8222"
    assert config["cluster"] == {"name": "eu", "listen": "127.0.0.1:6222",
                                 "routes": ["nats://127.0.0.1:6222", "nats://127.0.0.1:6223"]}
    assert config["gateway"]["name"] == "eu"
    assert config["gateway"]["gateways"][1] == {"name": "us", "urls": ["nats://127.0.0.1:7333"]}
    # Routes and gateways need no client account: only the service users are listed.
    assert [u["user"] for u in config["authorization"]["users"]] == ["cache"]


def test_a_clustered_server_needs_a_name_and_one_region() -> None:
    with pytest.raises(ValueError, match="server_name"):
        server_config(4222, "/tmp/s", [], cluster=ClusterBlock("eu", 6222))
    with pytest.raises(ValueError, match="gateway name"):
        server_config(4222, "/tmp/s", [], server_name="x", cluster=ClusterBlock("eu", 6222),
                      gateway=GatewayBlock("us", 7222))


def test_a_supercluster_names_every_server_and_lists_every_regions_gateways() -> None:
    sc = Supercluster(("eu", "us"), size=3)
    names = [s.server_name for servers in sc.regions.values() for s in servers]
    assert names == ["eu-0", "eu-1", "eu-2", "us-0", "us-1", "us-2"]
    eu0 = sc.servers("eu")[0]
    assert eu0.gateway is not None and eu0.cluster is not None
    assert set(eu0.gateway.gateways) == {"eu", "us"} and len(eu0.gateway.gateways["us"]) == 3
    assert len(eu0.cluster.routes) == 3 and sc.url("us").count("nats://") == 3
    with pytest.raises(ValueError):
        Supercluster(("eu", "eu"))


def test_region_names_map_to_streams_and_subjects() -> None:
    assert regional_stream("CMESH_CACHE", "") == "CMESH_CACHE"
    assert regional_stream("CMESH_CACHE", "eu-west") == "CMESH_CACHE_EU_WEST"
    assert regional_subject("cmesh.cache.log", "eu-west") == "cmesh.cache.log.eu-west"
    for bad in ("EU", "eu.west", "eu west", "eu_west", "-eu", "e" * 40):
        with pytest.raises(ValueError):
            regional_stream("S", bad)


def test_a_regional_cache_log_sources_every_peer_region() -> None:
    c = CacheSettings(region="eu", peer_regions=["us", "ap"]).log_config("nats://x")
    assert (c.stream, c.subject, c.dead, c.region) == (
        "CMESH_CACHE_EU", "cmesh.cache.log.eu", "cmesh.cache.dead.eu", "eu")
    assert c.followed == "cmesh.cache.log.*"
    assert c.sources == (PeerLog("us", "CMESH_CACHE_US", "cmesh.cache.log.us"),
                         PeerLog("ap", "CMESH_CACHE_AP", "cmesh.cache.log.ap"))
    plain = CacheSettings().log_config("nats://x")
    assert (plain.stream, plain.followed, plain.sources) == ("CMESH_CACHE", "cmesh.cache.log", ())


@pytest.mark.parametrize("fields", [{"peer_regions": ["us"]},
                                    {"region": "eu", "peer_regions": ["eu"]},
                                    {"region": "eu", "peer_regions": ["us", "us"]},
                                    {"region": "Eu"}])
def test_bad_region_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CacheSettings(**fields)


def test_the_brokers_streams_are_placed_in_its_region() -> None:
    limits = BrokerSettings(backends="small=a:1", region="eu").limits()
    where = limits.where()
    assert where is not None and where.cluster == "eu"
    assert stream_config("small", limits).placement == where
    assert BrokerSettings(backends="small=a:1").limits().where() is None


@pytest.mark.parametrize("fields", [{"failover_regions": ["b"]},
                                    {"region": "a", "failover_regions": ["a"]},
                                    {"region": "a", "failover_regions": ["b", "b"]},
                                    {"region": "a", "failover_regions": ["B"]}])
def test_bad_failover_regions_are_refused(fields: dict[str, object]) -> None:
    from services.gateway.settings import GatewaySettings

    with pytest.raises(ValidationError, match=r"failover_regions|region"):
        GatewaySettings(api_keys_file="k", **fields)


def test_a_gateway_tries_its_own_region_first_then_its_failover_order() -> None:
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings(api_keys_file="k", region="a", failover_regions=["c", "b"])
    assert settings.regions == ["a", "c", "b"]
    assert GatewaySettings(api_keys_file="k").regions == [""]  # no regions: as before
