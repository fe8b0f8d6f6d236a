"""`cmesh up --regions 2`: the local stack across two regions of a NATS supercluster.

The spec test starts nothing; the end-to-end test brings the whole two-region
stack up as `cmesh up --regions 2` does (real nats-servers, two real SmolLM2
vLLM backends, caches with the real MiniLM, the classifier, brokers and
gateways, mutual TLS and a NATS user per service and region) and asks through
both regions' gateways.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest

from cmesh.commands.gateway import regions_table
from cmesh.output import console
from cmesh.stack import REGIONS_FILE, LocalStack, ensure_dev_keys, region_specs
from cmesh.supervisor import kill_group
from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

REGIONS = ("a", "b")


def test_each_region_has_its_own_services_failing_over_to_the_others(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    specs = {s.name: s for s in region_specs(("a", "b", "c"), keys)}
    assert set(specs) == {"classifier", *(f"{svc}-{r}" for r in "abc"
                                          for svc in ("backend", "cache", "broker", "gateway"))}
    assert specs["classifier"].region == ""  # one for all: it holds no state
    gateway, cache, broker = specs["gateway-b"], specs["cache-b"], specs["broker-b"]
    assert {gateway.region, cache.region, broker.region} == {"b"}
    assert json.loads(gateway.args[gateway.args.index("--failover_regions") + 1]) == ["a", "c"]
    assert json.loads(cache.args[cache.args.index("--peer_regions") + 1]) == ["a", "c"]
    assert broker.args[broker.args.index("--backends") + 1] == (
        "small={backend-b};large={backend-b}")
    assert set(gateway.needs) == {"broker-b", "cache-b", "classifier"}
    assert gateway.peer_args is not None
    args = list(gateway.peer_args({"cache-b": "127.0.0.1:3", "classifier": "127.0.0.1:4"}))
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--cache_address"] == "127.0.0.1:3"
    assert Path(flags["--http_port_file"]) == tmp_path / "gateway-b-http.port"
    stack = LocalStack(list(specs.values()), tmp_path, regions=("a", "b", "c"))
    assert stack._nats_user(broker) == "broker-b" and stack._nats_user(gateway) == "gateway"


def ask(prompt: str) -> gateway_pb2.AskRequest:
    return gateway_pb2.AskRequest(prompt=prompt, sampling=common_pb2.SamplingParams(
        max_tokens=32, temperature=0.0))


@pytest.mark.vllm
@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_two_regions_serve_share_their_cache_and_fail_over(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    key = (tmp_path / "dev-api-key").read_text().strip()
    auth = (("authorization", f"Bearer {key}"),)
    async with LocalStack(region_specs(REGIONS, keys), tmp_path, regions=REGIONS) as stack:
        addresses = json.loads((tmp_path / "addresses.json").read_text())
        assert {"nats-a", "nats-b", "gateway-a", "gateway-b"} <= set(addresses)
        with console.capture() as seen:
            console.print(regions_table(json.loads((tmp_path / REGIONS_FILE).read_text())))
        assert "-> b" in seen.get() and "-> a" in seen.get()

        async with grpc.aio.insecure_channel(addresses["gateway-a"]) as ca, \
                grpc.aio.insecure_channel(addresses["gateway-b"]) as cb:
            gw_a, gw_b = gateway_pb2_grpc.GatewayStub(ca), gateway_pb2_grpc.GatewayStub(cb)
            prompt = "What is the capital of France? Answer in one word."
            first = await gw_a.Ask(ask(prompt), metadata=auth, timeout=300)
            assert first.text.strip() and first.metadata.region == "a"
            assert first.metadata.cache_stored, first.metadata.cache_store_reason

            t0 = time.monotonic()
            while True:  # stored through a, replicated into b's cache log
                there = await gw_b.Ask(ask(prompt), metadata=auth, timeout=300)
                if there.metadata.cache_hit:
                    break
                assert time.monotonic() - t0 < 30, "no hit through b's gateway"
                await asyncio.sleep(0.2)
            assert there.text == first.text

            backend_a = stack.services["backend-a"]
            kill_group(backend_a.proc.pid)  # a's only backend, engine core and all
            await backend_a.proc.wait()
            t0 = time.monotonic()
            while True:
                away = await gw_a.Ask(ask("Name one primary colour."), metadata=auth,
                                      timeout=300)
                if away.metadata.region == "b":
                    break
                assert time.monotonic() - t0 < 30, away.metadata
            assert away.text.strip()
            assert away.metadata.failover_reason.startswith("a: ")
