"""The Batch API with the official `openai` client over real HTTP and a real
nats-server (files and state in JetStream), with fake tiers: completion with
malformed lines, cancel, and a gateway restart mid-batch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from services.common.natsd import NatsServer
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
async def nats_url() -> AsyncIterator[str]:
    async with NatsServer() as server:
        yield server.url


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "acme"), add_key(path, "globex")


def node(keys: tuple[Path, str, str], nats_url: str, delay: float = 0.0,
         concurrency: int = 4) -> GatewayNode:
    tiers = {"small": FakeTier("small", delay=delay), "large": FakeTier("large", delay=delay)}
    settings = GatewaySettings(port=0, http_port=0, api_keys_file=keys[0], nats_url=nats_url,
                               batch_concurrency=concurrency, rate_limit_per_s=1000,
                               rate_limit_burst=1000)
    return GatewayNode(settings, tiers=tiers)


def batch_file(count: int, malformed: tuple[int, ...] = ()) -> bytes:
    lines = []
    for i in range(count):
        if i in malformed:
            lines.append(["{not json", json.dumps({"custom_id": f"c{i}", "method": "GET",
                                                   "url": "/v1/chat/completions", "body": {}}),
                          json.dumps({"method": "POST", "url": "/v1/chat/completions",
                                      "body": {}})][malformed.index(i) % 3])
        else:
            lines.append(json.dumps({"custom_id": f"c{i}", "method": "POST",
                                     "url": "/v1/chat/completions", "body": {
                                         "model": "small", "max_tokens": 8, "messages": [
                                             {"role": "user", "content": f"line {i}"}]}}))
    return ("\n".join(lines) + "\n").encode()


async def wait_for(client: openai.AsyncOpenAI, batch_id: str, statuses: set[str],
                   timeout: float = 60) -> openai.types.Batch:
    give_up = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < give_up, batch
        await asyncio.sleep(0.1)


def client_of(gateway: GatewayNode, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.http_base_url, api_key=key, max_retries=0)


async def test_fifty_lines_with_three_malformed_complete_with_both_files(keys,
                                                                        nats_url) -> None:
    async with node(keys, nats_url) as gateway, client_of(gateway, keys[1]) as client:
        upload = await client.files.create(file=("in.jsonl", batch_file(50, (7, 21, 40))),
                                           purpose="batch")
        assert (await client.files.retrieve(upload.id)).bytes == upload.bytes
        batch = await client.batches.create(input_file_id=upload.id, completion_window="24h",
                                            endpoint="/v1/chat/completions",
                                            metadata={"run": "unit"})
        done = await wait_for(client, batch.id, {"completed", "failed"})
        assert done.status == "completed", done
        assert done.request_counts.total == 50
        assert (done.request_counts.completed, done.request_counts.failed) == (47, 3)
        assert done.completed_at and done.in_progress_at and done.finalizing_at
        assert done.metadata == {"run": "unit"}
        output = [json.loads(x) for x in (await client.files.content(
            done.output_file_id)).text.splitlines()]
        assert sorted(o["custom_id"] for o in output) == sorted(
            f"c{i}" for i in range(50) if i not in (7, 21, 40))
        for line in output:
            body = line["response"]["body"]
            assert line["response"]["status_code"] == 200
            assert body["choices"][0]["message"]["content"] == \
                f"small: line {line['custom_id'][1:]} "
        errors = [json.loads(x) for x in (await client.files.content(
            done.error_file_id)).text.splitlines()]
        assert len(errors) == 3 and all(e["error"]["code"] == "invalid_line" for e in errors)
        assert {e["custom_id"] for e in errors} == {None, "c21"}
        listed = [b.id async for b in client.batches.list()]
        assert batch.id in listed
    async with node(keys, nats_url) as gateway, client_of(gateway, keys[2]) as other:
        with pytest.raises(openai.NotFoundError):
            await other.batches.retrieve(batch.id)  # another tenant's batch
        with pytest.raises(openai.NotFoundError):
            await other.files.content(done.output_file_id)


async def test_cancel_stops_new_lines_and_keeps_finished_ones(keys, nats_url) -> None:
    async with node(keys, nats_url, delay=0.05, concurrency=2) as gateway, \
            client_of(gateway, keys[1]) as client:
        upload = await client.files.create(file=("in.jsonl", batch_file(40)), purpose="batch")
        batch = await client.batches.create(input_file_id=upload.id, completion_window="24h",
                                            endpoint="/v1/chat/completions")
        await wait_for(client, batch.id, {"in_progress"})
        await asyncio.sleep(0.6)
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        calls_at_cancel = sum(t.calls for t in gateway.orchestrator.tiers.values())
        done = await wait_for(client, batch.id, {"cancelled"})
        started = sum(t.calls for t in gateway.orchestrator.tiers.values())
        assert started == calls_at_cancel  # nothing new started after the cancel
        finished = (await client.files.content(done.output_file_id)).text.splitlines()
        assert 0 < len(finished) < 40 and done.request_counts.completed == len(finished)
        with pytest.raises(openai.APIStatusError) as err:
            await client.batches.cancel(batch.id)
        assert err.value.status_code == 409


async def test_a_gateway_restart_mid_batch_resumes_and_runs_each_line_once(
        keys, nats_url) -> None:
    first = node(keys, nats_url, delay=0.05, concurrency=2)
    await first.__aenter__()
    async with client_of(first, keys[1]) as client:
        upload = await client.files.create(file=("in.jsonl", batch_file(30)), purpose="batch")
        batch = await client.batches.create(input_file_id=upload.id, completion_window="24h",
                                            endpoint="/v1/chat/completions")
        await wait_for(client, batch.id, {"in_progress"})
        await asyncio.sleep(0.8)
    before = sum(t.calls for t in first.orchestrator.tiers.values())
    await first.__aexit__(None, None, None)
    assert 0 < before < 30
    async with node(keys, nats_url) as second, client_of(second, keys[1]) as client:
        done = await wait_for(client, batch.id, {"completed"})
        after = sum(t.calls for t in second.orchestrator.tiers.values())
        output = [json.loads(x)["custom_id"] for x in (await client.files.content(
            done.output_file_id)).text.splitlines()]
    assert sorted(output) == sorted(f"c{i}" for i in range(30))  # each exactly once
    assert done.request_counts.completed == 30
    assert before + after <= 30 + 2  # at most the lines in flight at the restart re-ran


async def test_nats_restart_mid_batch_completes_with_each_line_once(keys) -> None:
    nats = NatsServer()
    await nats.start()
    try:
        async with node(keys, nats.url, delay=0.05, concurrency=2) as gateway, \
                client_of(gateway, keys[1]) as client:
            upload = await client.files.create(file=("in.jsonl", batch_file(30)),
                                               purpose="batch")
            batch = await client.batches.create(input_file_id=upload.id,
                                                completion_window="24h",
                                                endpoint="/v1/chat/completions")
            await wait_for(client, batch.id, {"in_progress"})
            await asyncio.sleep(0.5)
            await nats.stop()
            await asyncio.sleep(6.0)  # longer than a JetStream request's timeout (5 s)
            await nats.start()
            done = await wait_for(client, batch.id, {"completed"}, timeout=90)
            output = [json.loads(x)["custom_id"] for x in (await client.files.content(
                done.output_file_id)).text.splitlines()]
    finally:
        await nats.__aexit__(None, None, None)  # stops it and removes its store
    assert sorted(output) == sorted(f"c{i}" for i in range(30))
    assert done.request_counts.completed == 30
