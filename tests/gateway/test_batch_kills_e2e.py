"""A Batch API batch of 100 on the real mesh (nats-server, cache, classifier, broker,
one vLLM SmolLM2 engine behind both tiers) survives a crash of the gateway and of the
NATS server: each is killed mid-batch and started again, and the batch completes
with every custom_id exactly once in its output file. (The broker's crash is in
`test_openai_door_e2e.py`, on that module's door.)

Each test has its own prompts, so the cache (shared by the session's mesh) answers
none of its lines and the crash happens while lines are generating.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from services.common.natsd import free_port
from services.gateway.main import GatewayNode
from tests.gateway.conftest import Mesh
from tests.support import ServiceProcess, start_service

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.timeout(900)]

LINES = 100


def batch_lines(prefix: str) -> bytes:
    return "\n".join(json.dumps({
        "custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/completions",
        "body": {"model": "small", "prompt": f"{prefix}: count from {i} to {i + 3}.",
                 "max_tokens": 8, "temperature": 0}}) for i in range(LINES)).encode()


def door_client(base_url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=3, timeout=60)


async def submit(client: openai.AsyncOpenAI, prefix: str) -> Any:
    upload = await client.files.create(file=(f"{prefix}.jsonl", batch_lines(prefix)),
                                       purpose="batch")
    return await client.batches.create(input_file_id=upload.id, completion_window="24h",
                                       endpoint="/v1/completions")


async def until_completed(client: openai.AsyncOpenAI, batch_id: str, at_least: int,
                          timeout: float) -> Any:
    """Poll until `at_least` lines completed (`LINES` waits for the whole batch)."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            batch = await client.batches.retrieve(batch_id)
        except (openai.APIConnectionError, openai.InternalServerError):
            assert time.monotonic() < give_up  # NATS on its way back: ask again
            await asyncio.sleep(0.5)
            continue
        if at_least >= LINES and batch.status in ("completed", "failed", "expired"):
            return batch
        counts = batch.request_counts
        if at_least < LINES and counts is not None and counts.completed >= at_least:
            assert batch.status == "in_progress", batch
            return batch
        assert time.monotonic() < give_up, batch
        await asyncio.sleep(0.5)


async def assert_each_line_once(client: openai.AsyncOpenAI, batch: Any, prefix: str) -> None:
    assert batch.status == "completed" and batch.request_counts.completed == LINES, batch
    output = [json.loads(x) for x in (await client.files.content(
        batch.output_file_id)).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == sorted(f"{prefix}{i}"
                                                            for i in range(LINES))
    assert all(o["response"]["status_code"] == 200 for o in output)
    assert batch.error_file_id is None


def gateway_process(mesh: Mesh) -> tuple[ServiceProcess, str]:
    """A gateway as its own process (so it can be SIGKILLed) and its door's base URL."""
    http_port = free_port()
    proc = start_service(
        "services.gateway", "--nats_url", mesh.nats.url, "--http_port", str(http_port),
        "--api_keys_file", str(mesh.keys_file), "--cache_address", mesh.cache.address,
        "--classifier_address", mesh.classifier.address, "--default_max_tokens", "32",
        "--rate_limit_per_s", "200", "--rate_limit_burst", "400",
        "--cache_timeout_ms", "2000", "--classifier_timeout_ms", "2000")
    return proc, f"http://127.0.0.1:{http_port}/v1"


@pytest.fixture
async def gateways(lean_mesh: Mesh) -> AsyncIterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def test_killing_the_gateway_mid_batch_resumes_on_a_new_one_each_line_once(
        lean_mesh: Mesh, gateways: list[ServiceProcess]) -> None:
    """SIGKILL the gateway process that runs a batch of 100, start another on the same
    NATS: it resumes the batch from JetStream; lines stored before the crash are not
    run again, the ones in flight are, and each custom_id is in the output once."""
    first, first_url = gateway_process(lean_mesh)
    gateways.append(first)
    await asyncio.to_thread(first.wait_serving, 120)
    async with door_client(first_url, lean_mesh.key) as client:
        batch = await submit(client, "gw")
        await until_completed(client, batch.id, 10, timeout=300)
    first.kill()
    second, second_url = gateway_process(lean_mesh)
    gateways.append(second)
    await asyncio.to_thread(second.wait_serving, 120)
    async with door_client(second_url, lean_mesh.key) as client:
        done = await until_completed(client, batch.id, LINES, timeout=600)
        await assert_each_line_once(client, done, "gw")


async def test_killing_nats_mid_batch_completes_each_line_once(lean_mesh: Mesh) -> None:
    """Kill nats-server (SIGKILL) while a batch of 100 runs, wait past a JetStream
    request's timeout, start it again on the same port and store: the gateway, the
    broker and the cache reconnect, and the batch completes, each custom_id once."""
    settings = lean_mesh.settings(nats_url=lean_mesh.nats.url, backend_addresses={},
                                  http_port=0)
    async with GatewayNode(settings) as node, \
            door_client(node.http_base_url, lean_mesh.key) as client:
        batch = await submit(client, "nats")
        await until_completed(client, batch.id, 10, timeout=300)
        await lean_mesh.nats.stop()
        await asyncio.sleep(6.0)  # longer than a JetStream request's timeout (5 s)
        await lean_mesh.nats.start()
        done = await until_completed(client, batch.id, LINES, timeout=600)
        await assert_each_line_once(client, done, "nats")
