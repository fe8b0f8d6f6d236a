"""The local stack's NATS users: each service can do its own work and nothing more.

A real nats-server with the stack's users (`cmesh.nats_users`), read from its
0600 config file; every client authenticates with a credentials file, as the
stack's services do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from cache.entries import Event
from cmesh.nats_users import mesh_users
from protos.broker.v1 import broker_pb2
from protos.common.v1 import common_pb2
from services.broker.client import BrokerClient
from services.broker.jetstream import JobQueue, QueueLimits, settle
from services.cache.log import LogConfig, open_log
from services.common.natsauth import (
    NatsCredentials,
    connect_options,
    refuse_passwords_in_argv,
    write_credentials,
)
from services.common.natsd import NatsServer
from services.gateway.batch.store import BatchStore, new_file

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]
VIOLATION = "permissions violation"


@pytest.fixture(scope="module")
async def stack_nats(tmp_path_factory: pytest.TempPathFactory
                     ) -> AsyncIterator[tuple[NatsServer, dict[str, dict[str, Any]]]]:
    folder = tmp_path_factory.mktemp("nats-users")
    users = mesh_users(["small"])
    options = {}
    for name, user in users.items():
        path = write_credentials(folder / f"{name}.nats-auth",
                                 NatsCredentials(user.user, user.password))
        options[name] = connect_options(name, path)
    async with NatsServer(store_dir=folder / "js", users=list(users.values())) as server:
        yield server, options


async def connect(server: NatsServer, options: dict[str, Any], errors: list[str]) -> Any:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(server.public_url, error_cb=on_error, allow_reconnect=False,
                              **options)


async def test_passwords_are_in_a_0600_config_file_not_the_command_line(
        stack_nats: tuple[NatsServer, dict[str, dict[str, Any]]], tmp_path: Path) -> None:
    server, options = stack_nats
    assert server.config_path.stat().st_mode & 0o777 == 0o600
    cmdline = Path(f"/proc/{server._proc.pid}/cmdline").read_bytes()  # type: ignore[union-attr]
    for opts in options.values():
        assert opts["password"].encode() not in cmdline
        assert opts["password"] in server.config_path.read_text()
    with pytest.raises(Exception, match=r"(?i)authoriz"):  # no anonymous access
        await nats.connect(server.public_url, allow_reconnect=False, connect_timeout=2)
    with pytest.raises(SystemExit, match="command line"):
        refuse_passwords_in_argv(["--nats_url", "nats://cache:pw@127.0.0.1:4222"])
    with pytest.raises(SystemExit):
        refuse_passwords_in_argv(["--port", "0", "--nats_url=nats://a:b@h:1,nats://h:2"])
    refuse_passwords_in_argv(["--nats_url", "nats://127.0.0.1:4222"])


class Applied:
    """An event sink that records what the log hands it, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def apply(self, event: Event) -> list[Event]:
        self.events.append(event)
        return []

    def withdraw(self, event: Event) -> None:
        pass


async def test_the_cache_keeps_its_log_with_its_own_user(
        stack_nats: tuple[NatsServer, dict[str, dict[str, Any]]],
        caplog: pytest.LogCaptureFixture) -> None:
    server, options = stack_nats
    sink = Applied()
    config = LogConfig(url=server.public_url, connect_options=options["cache"],
                       publish_timeout_s=5)
    async with open_log(config, sink) as log:
        seq = await log.append(Event(op="invalidate", tenant="acme"))
        assert seq is not None and await log.caught_up(seq)
    async with open_log(config, sink) as replay:
        assert replay.replayed.is_set() and replay.last_seq == seq
    assert [e.tenant for e in sink.events] == ["acme", "acme"]  # applied, then replayed
    assert VIOLATION not in caplog.text.lower()


async def test_gateway_and_broker_run_a_job_and_the_gateway_keeps_batches(
        stack_nats: tuple[NatsServer, dict[str, dict[str, Any]]],
        caplog: pytest.LogCaptureFixture) -> None:
    server, options = stack_nats
    caplog.set_level(logging.WARNING)
    async with JobQueue([server.public_url], QueueLimits(), connect_options=options["broker"]) \
            as queue, BrokerClient(server.public_url,
                                   connect_options=options["gateway"]) as client:
        await queue.ensure("small")
        sub = await queue.consumer("small", "interactive")
        cancelled: list[str] = []

        async def on_cancel(job_id: str) -> None:
            cancelled.append(job_id)

        await queue.on_cancel(on_cancel)
        job = await client.submit(broker_pb2.GenerateJob(tier="small", tenant="acme",
                                                         prompt="hi"), deadline_s=30)
        [msg] = await queue.fetch(sub, 1, 5)
        await settle(msg, "progress")
        got = broker_pb2.GenerateJob.FromString(msg.data)
        await queue.reply(got.reply_subject, broker_pb2.JobChunk(text_delta="hello",
                                                                 finish_reason=common_pb2.FINISH_REASON_STOP))
        assert await job.text() == "hello"
        await settle(msg, "ack")
        await queue.mark_done(got.job_id)
        assert await queue.was_done(got.job_id)
        await job.cancel()
        for _ in range(50):
            if cancelled:
                break
            await asyncio.sleep(0.05)
        assert cancelled == [got.job_id]
        assert await queue.pending("small", "interactive") == 0

        store = await BatchStore(client.js).open()
        file = new_file("in.jsonl", "batch", 3)
        await store.put_file(file, "acme", b"abc")
        assert await store.content(file["id"], "acme") == b"abc"
        await store.put_batch({"id": "batch_1", "created_at": 1}, "acme")
        assert [b["id"] for b in await store.batches("acme")] == ["batch_1"]
        await store.put_line("batch_1", 0, {"ok": True})
        assert await store.line("batch_1", 0) == {"ok": True}
    assert VIOLATION not in caplog.text.lower()


async def test_the_gateway_user_cannot_read_or_write_the_cache_log(
        stack_nats: tuple[NatsServer, dict[str, dict[str, Any]]]) -> None:
    server, options = stack_nats
    errors: list[str] = []
    nc = await connect(server, options["gateway"], errors)
    try:
        for subject in ("cmesh.cache.log", "cmesh.cache.>", "_INBOX_cache.>", ">"):
            await nc.subscribe(subject)
        await nc.flush(timeout=5)
        await asyncio.sleep(0.2)
        for subject in ("cmesh.cache.log", "cmesh.cache.>", "_INBOX_cache.>", ">"):
            assert any(f'subscription to "{subject.lower()}"' in e.lower() for e in errors), errors
        js = nc.jetstream(timeout=2)
        with pytest.raises(Exception):  # noqa: B017 - no responder or a timeout: refused
            await js.subscribe("cmesh.cache.log", stream="CMESH_CACHE")
        with pytest.raises(Exception):  # noqa: B017
            await js.publish("cmesh.cache.log", b'{"op":"store"}', timeout=2)
        with pytest.raises(Exception):  # noqa: B017
            await js.stream_info("CMESH_CACHE")
    finally:
        await nc.close()
    broker_errors: list[str] = []
    nc = await connect(server, options["broker"], broker_errors)
    try:
        await nc.subscribe("cmesh.cache.log")
        await nc.flush(timeout=5)
        await asyncio.sleep(0.2)
        assert any("subscription to" in e.lower() for e in broker_errors), broker_errors
    finally:
        await nc.close()


def test_compose_secrets_are_written_0600_with_a_user_per_service(tmp_path: Path) -> None:
    import json

    from cmesh.nats_users import write_mesh_users

    paths = write_mesh_users(tmp_path, ["small", "large"])
    assert set(paths) == {"nats", "gateway", "broker", "cache"}
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == 0o600
    config = json.loads(paths["nats"].read_text())
    assert config["listen"] == "0.0.0.0:4222" and config["http"] == "0.0.0.0:8222"
    users = {u["user"]: u for u in config["authorization"]["users"]}
    for name in ("gateway", "broker", "cache"):
        assert paths[name].read_text().strip() == f"{name}:{users[name]['password']}"
    assert "gen.large.>" in users["broker"]["permissions"]["publish"]["allow"]


async def test_a_clustered_jetstream_takes_the_same_users(tmp_path: Path) -> None:
    from services.common.natscluster import NatsCluster

    users = mesh_users(["small"])
    options = {name: connect_options(name, write_credentials(
        tmp_path / f"{name}.nats-auth", NatsCredentials(u.user, u.password)))
        for name, u in users.items()}
    async with NatsCluster(3, tmp_path / "c", users=list(users.values()),
                           connect_options=options["broker"]) as cluster:
        for node in cluster.nodes:
            assert node.config_path.stat().st_mode & 0o777 == 0o600
        async with JobQueue(cluster.urls, QueueLimits(replicas=3),
                            connect_options=options["broker"]) as queue, \
                BrokerClient(cluster.urls, connect_options=options["gateway"]) as client:
            await queue.ensure("small")
            sub = await queue.consumer("small", "interactive")
            await client.submit(broker_pb2.GenerateJob(tier="small", prompt="hi"),
                                deadline_s=30)
            [msg] = await queue.fetch(sub, 1, 10)
            await settle(msg, "ack")
        with pytest.raises(Exception, match=r"(?i)authoriz"):
            await nats.connect(servers=cluster.urls, allow_reconnect=False, connect_timeout=2)
