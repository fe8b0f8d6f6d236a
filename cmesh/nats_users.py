"""One NATS user per service of the local stack, each allowed only its own subjects.

    gateway  publishes jobs (`gen.>`, regions' `rgen.>`) and cancels, reads its own
             inbox (job replies, JetStream acks), keeps the Batch API's buckets
             (`cmesh_*` KV and object store)
    broker   creates and consumes its tiers' work queues (`GEN_<TIER>`), its done
             bucket, answers on the gateway's inboxes, hears cancels
    cache    creates, writes and follows its event log (`CMESH_CACHE`, dead letters)

JetStream is reached through `$JS.API.<op>.<stream>...` request subjects, so each
user is granted the operations it uses on its own streams only, never
`$JS.API.>`: the gateway's credential can neither subscribe to `cmesh.cache.log`
nor create a consumer on `CMESH_CACHE`. Replies need a subscription on the
caller's inbox; each service has its own inbox prefix
(`services.common.natsauth.inbox_prefix`), because a push consumer delivers the
cache log to the cache's inbox and a shared `_INBOX.>` would hand it to anyone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from services.common.natsauth import NatsCredentials, inbox_prefix, write_credentials
from services.common.natsd import NatsUser, server_config
from services.common.regions import regional_stream, regional_subject

API = "$JS.API"


def _stream_ops(stream: str, *, consume: bool = False, get: bool = False) -> list[str]:
    """JetStream API subjects to create, update and inspect `stream`, and optionally to
    consume it (consumers, pulls, acks, flow control) or read single messages (KV get)."""
    subjects = [f"{API}.STREAM.{op}.{stream}" for op in ("CREATE", "UPDATE", "INFO")]
    if consume:
        subjects += [f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.CREATE.{stream}.>",
                     f"{API}.CONSUMER.DURABLE.CREATE.{stream}.>",
                     f"{API}.CONSUMER.INFO.{stream}.>", f"{API}.CONSUMER.DELETE.{stream}.>",
                     f"{API}.CONSUMER.MSG.NEXT.{stream}.>", f"$JS.ACK.{stream}.>",
                     f"$JS.FC.{stream}.>"]
    if get:
        subjects += [f"{API}.STREAM.MSG.GET.{stream}", f"{API}.DIRECT.GET.{stream}",
                     f"{API}.DIRECT.GET.{stream}.>"]
    return subjects


def cache_permissions(stream: str = "CMESH_CACHE", subject: str = "cmesh.cache.log",
                      dead_subject: str = "cmesh.cache.dead",
                      peer_streams: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(publish, subscribe) of the cache: its log stream and its dead letters, and the
    creation and info (only) of other regions' logs it sources: it creates them where
    they are missing and checks they answer before restarting a stalled source."""
    publish = [subject, dead_subject, *_stream_ops(stream, consume=True),
               *_stream_ops(f"{stream}_DEAD"),
               *(f"{API}.STREAM.{op}.{peer}" for peer in peer_streams
                 for op in ("CREATE", "INFO"))]
    return publish, [f"{inbox_prefix('cache')}.>"]


def regional_cache_permissions(region: str, peer_regions: Sequence[str]
                               ) -> tuple[list[str], list[str]]:
    """(publish, subscribe) of a region's cache (`CMESH_CACHE_<REGION>` on
    `cmesh.cache.log.<region>`, sourcing `peer_regions`' logs; docs/regions.md).
    Sourcing is the servers' own work: it takes no permission of this user. Account
    info (usage, no data) is the supercluster's readiness check."""
    publish, subscribe = cache_permissions(
        regional_stream("CMESH_CACHE", region), regional_subject("cmesh.cache.log", region),
        regional_subject("cmesh.cache.dead", region),
        [regional_stream("CMESH_CACHE", p) for p in peer_regions])
    return [*publish, f"{API}.INFO"], subscribe


def broker_permissions(tiers: Iterable[str], region: str = "") -> tuple[list[str], list[str]]:
    """(publish, subscribe) of a broker serving `tiers` (their queues in `region`)."""
    from services.broker.jetstream import done_bucket
    from services.broker.subjects import CANCEL_SUBJECT, beacon_subject, queue_root, stream_name

    done = done_bucket(region)
    publish = [f"{inbox_prefix('gateway')}.>", f"$KV.{done}.>",
               f"{API}.INFO",  # account usage, no data (a cluster's readiness check)
               *_stream_ops(f"KV_{done}", get=True)]
    for tier in sorted(tiers):
        publish += [f"{queue_root(tier, region)}.>", beacon_subject(tier, region),
                    *_stream_ops(stream_name(tier, region), consume=True)]
    return publish, [CANCEL_SUBJECT, f"{inbox_prefix('broker')}.>"]


def gateway_permissions() -> tuple[list[str], list[str]]:
    """(publish, subscribe) of the gateway: jobs (to any region's queues), cancels, the
    Batch API's buckets; it reads the brokers' tier beacons."""
    from services.broker.subjects import BEACONS, CANCEL_SUBJECT
    from services.gateway.batch.store import BATCHES, FILE_META, FILES, LINES

    publish = ["gen.>", "rgen.>", CANCEL_SUBJECT, f"$O.{FILES}.>",
               *_stream_ops(f"OBJ_{FILES}", consume=True, get=True),
               f"{API}.STREAM.PURGE.OBJ_{FILES}",
               f"{API}.STREAM.NAMES"]  # an object's get finds its stream by subject
    for bucket in (FILE_META, BATCHES, LINES):
        publish += [f"$KV.{bucket}.>", *_stream_ops(f"KV_{bucket}", consume=True, get=True)]
    return publish, [f"{inbox_prefix('gateway')}.>", BEACONS]


def write_mesh_users(folder: Path, tiers: Sequence[str], host: str = "0.0.0.0",
                     port: int = 4222, store_dir: str = "/data",
                     monitor_port: int | None = 8222) -> dict[str, Path]:
    """A server config (`nats.conf`) and one credentials file per service
    (`<service>.nats-auth`) in `folder`, all 0600, for a NATS server run apart from the
    stack (compose: `cmesh keys nats --dir secrets`). Fresh passwords each time."""
    users = mesh_users(tiers)
    paths = {name: write_credentials(folder / f"{name}.nats-auth",
                                     NatsCredentials(user.user, user.password))
             for name, user in users.items()}
    config = folder / "nats.conf"
    config.unlink(missing_ok=True)
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(server_config(port, store_dir, list(users.values()), host, monitor_port))
    return {"nats": config, **paths}


def region_user(service: str, region: str, regions: Sequence[str]) -> str:
    """The NATS user of `service` in `region`: the gateways share `gateway`; the first
    region's broker and cache are `broker` and `cache` (so a one-region deployment's
    files serve as that region's), the others' `broker-<r>`, `cache-<r>`."""
    if service == "gateway" or not region or region == regions[0]:
        return service
    return f"{service}-{region}"


def region_users(regions: Sequence[str], tiers: Sequence[str]) -> dict[str, NatsUser]:
    """The users of a stack across `regions`, by name (`region_user`): one for the
    gateways (jobs to any region's queues), and per region its broker and cache, allowed
    its own region's queues and log only."""
    permissions = {"gateway": gateway_permissions()}
    for region in regions:
        permissions[region_user("broker", region, regions)] = broker_permissions(tiers, region)
        permissions[region_user("cache", region, regions)] = regional_cache_permissions(
            region, [r for r in regions if r != region])
    return {name: NatsUser(name, secrets.token_urlsafe(24), publish=pub, subscribe=sub)
            for name, (pub, sub) in permissions.items()}


def write_region_users(folder: Path, regions: Sequence[str], tiers: Sequence[str],
                       hosts: Sequence[str] = (), port: int = 4222, cluster_port: int = 6222,
                       gateway_port: int = 7222, store_dir: str = "/data",
                       monitor_port: int | None = 8222) -> dict[str, Path]:
    """Per region a server config (`nats.conf` for the first region, `nats-<r>.conf`
    for the others) joining the regions as a supercluster, and one credentials file per
    user of `region_users` (`<user>.nats-auth`), all 0600. `hosts` are the regions'
    server host names as the others reach them (default: `nats` for the first,
    `nats-<r>` for the others, compose's service names)."""
    from services.common.natsd import ClusterBlock, GatewayBlock

    names = list(hosts) or ["nats", *(f"nats-{r}" for r in regions[1:])]
    if len(names) != len(regions):
        raise ValueError("hosts: one per region")
    users = region_users(regions, tiers)
    paths = {name: write_credentials(folder / f"{name}.nats-auth",
                                     NatsCredentials(user.user, user.password))
             for name, user in users.items()}
    gateways = {r: [f"nats://{h}:{gateway_port}"] for r, h in zip(regions, names, strict=True)}
    for region, host in zip(regions, names, strict=True):
        config = folder / f"{host}.conf"
        config.unlink(missing_ok=True)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(server_config(
                port, store_dir, list(users.values()), "0.0.0.0", monitor_port,
                server_name=host, cluster=ClusterBlock(region, cluster_port),
                gateway=GatewayBlock(region, gateway_port, gateways)))
        paths[host] = config
    return paths


def mesh_users(tiers: Sequence[str]) -> dict[str, NatsUser]:
    """The stack's users with fresh random passwords, by service name."""
    permissions = {"gateway": gateway_permissions(), "broker": broker_permissions(tiers),
                   "cache": cache_permissions()}
    return {name: NatsUser(name, secrets.token_urlsafe(24), publish=pub, subscribe=sub)
            for name, (pub, sub) in permissions.items()}
