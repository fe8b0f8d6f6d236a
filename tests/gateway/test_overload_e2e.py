"""Deadline-aware tier admission on the real mesh, tiers through the broker.

Overload is made by offering twice the tier's bound (shrunk to 4 by a setting, so a
few concurrent clients are enough on this CPU), and counted as outcomes: the excess
is refused with RESOURCE_EXHAUSTED and a retry-after, no accepted request ends in
DEADLINE_EXCEEDED, and no job runs at a backend past its deadline (the broker's
`expired` terminations stay put; the backends count exactly the answered calls).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from urllib.request import urlopen

import grpc
import httpx
import pytest

from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from tests.gateway.conftest import Mesh
from tests.support import ServiceProcess

pytestmark = [pytest.mark.vllm, pytest.mark.nats]

BOUND = 4
CLIENTS = 2 * BOUND
ATTEMPTS = 48           # in all, over every client: a bounded run (about 20-30 s here)
RETRY_CAP_S = 0.5       # clients honour the retry hint, up to this, then come back


def sample(service: ServiceProcess, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    body = urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read()
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def expired_terms(mesh: Mesh) -> float:
    return sample(mesh.broker, "broker_terminations_total", reason="expired")


def ask(prompt: str, max_tokens: int = 12) -> gateway_pb2.AskRequest:
    return gateway_pb2.AskRequest(
        prompt=prompt, sampling=common_pb2.SamplingParams(max_tokens=max_tokens),
        policy=gateway_pb2.PolicyOverrides(force_tier="small", skip_cache=True))


async def settled_backend_count(mesh: Mesh, expected: float) -> float:
    """The backends' request count once it reaches `expected` or stops moving (a backend
    counts a call when its handler ends, just after the broker relayed the last chunk)."""
    give_up = time.monotonic() + 15
    while mesh.backend_requests() < expected and time.monotonic() < give_up:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything still arriving would show now
    return mesh.backend_requests()


async def test_twice_the_bound_is_refused_with_a_retry_hint_and_nothing_expires(
        mesh: Mesh) -> None:
    keys = [mesh.key, mesh.other_key, add_key(mesh.keys_file, "initech")]
    settings = mesh.settings(nats_url=mesh.nats.url, backend_addresses={},
                             tier_max_pending=BOUND, tier_concurrency=2)
    outcomes: Counter[str] = Counter()
    retry_ms: list[int] = []
    numbers = itertools.count()
    async with GatewayNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        base = mesh.backend_requests()
        await stub.Ask(ask("Say hello."), metadata=(("authorization", f"Bearer {mesh.key}"),),
                       timeout=120)  # warms the estimate with one measured call
        backend_before = await settled_backend_count(mesh, base + 1)
        expired_before = expired_terms(mesh)

        async def client(key: str) -> None:
            while (n := next(numbers)) < ATTEMPTS:
                try:
                    await stub.Ask(ask(f"Name one fruit, please (request {n})."),
                                   metadata=(("authorization", f"Bearer {key}"),), timeout=60)
                    outcomes["OK"] += 1
                except grpc.aio.AioRpcError as err:
                    outcomes[err.code().name] += 1
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        hint = dict(err.trailing_metadata() or ()).get("retry-after-ms")
                        retry_ms.append(int(hint) if hint else -1)
                        await asyncio.sleep(min(RETRY_CAP_S, retry_ms[-1] / 1000))

        await asyncio.gather(*(client(keys[i % len(keys)]) for i in range(CLIENTS)))
        backend_after = await settled_backend_count(mesh, backend_before + outcomes["OK"])
        expired_after = expired_terms(mesh)
    assert sum(outcomes.values()) == ATTEMPTS
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"}, outcomes  # no DEADLINE_EXCEEDED
    assert retry_ms and min(retry_ms) > 0, retry_ms  # every refusal says when to retry
    assert len(set(retry_ms)) > 1, retry_ms  # estimated from the queue, not one constant
    assert backend_after - backend_before == outcomes["OK"]  # refused calls reached none
    assert expired_after == expired_before  # no job ran out its deadline in a backend


async def test_a_50_ms_deadline_never_reaches_a_backend(mesh: Mesh) -> None:
    """Over gRPC (refused, or the client's own deadline first) and over HTTP (429 with a
    Retry-After): the backends count nothing either way."""
    settings = mesh.settings(nats_url=mesh.nats.url, backend_addresses={}, http_port=0)
    async with GatewayNode(settings) as node, \
            grpc.aio.insecure_channel(node.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        before = mesh.backend_requests()
        codes = []
        for n in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Ask(ask(f"Tell me a long story about a dragon ({n}).", 64),
                               metadata=(("authorization", f"Bearer {mesh.key}"),),
                               timeout=0.05)
            codes.append(err.value.code())
        assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED,
                              grpc.StatusCode.DEADLINE_EXCEEDED}, codes
        async with httpx.AsyncClient(timeout=60) as http:
            reply = await http.post(f"{node.http_base_url}/chat/completions", headers={
                "authorization": f"Bearer {mesh.key}", "x-cmesh-timeout-s": "0.05",
                "x-cmesh-skip-cache": "1"}, json={
                "model": "small", "max_tokens": 64,
                "messages": [{"role": "user", "content": "Tell me a long story."}]})
        assert reply.status_code == 429, reply.text
        assert int(reply.headers["retry-after-ms"]) > 0 and "deadline" in reply.text
        assert await settled_backend_count(mesh, before) == before
