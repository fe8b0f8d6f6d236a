"""The HTTP door over real HTTP (uvicorn on port 0, inside a real GatewayNode) with fake
tiers, driven by the official `openai` client: shapes, streaming, errors, draining.
The same door on the real mesh is in test_openai_door_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeTier


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "acme")


@pytest.fixture(scope="module")
async def node(keys: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[GatewayNode]:
    tiers = {"small": FakeTier("small", 0.95), "large": FakeTier("large", 0.95)}
    port_file = tmp_path_factory.mktemp("ports") / "gateway.http.port"
    settings = GatewaySettings(port=0, http_port=0, http_port_file=port_file,
                               api_keys_file=keys[0], policy="cascade",
                               rate_limit_per_s=1000, rate_limit_burst=1000)
    async with GatewayNode(settings, tiers=tiers) as running:
        yield running


@pytest.fixture
async def client(node: GatewayNode, keys: tuple[Path, str]
                 ) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=node.http_base_url, api_key=keys[1],
                                  max_retries=0, timeout=20) as c:
        yield c


async def test_port_file_names_the_bound_port(node: GatewayNode) -> None:
    assert node.settings.http_port_file is not None
    port = int(node.settings.http_port_file.read_text())
    assert node.http_base_url == f"http://127.0.0.1:{port}/v1"


async def test_chat_completion_has_text_usage_and_cascade_metadata(client) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="cascade-mesh", messages=[{"role": "user", "content": "hello there"}])
    reply = raw.parse()
    assert reply.choices[0].message.content == "small: hello there "
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3
    cascade = reply.model_extra["cascade"]
    assert cascade["tier"] == "small" and cascade["tiers_tried"] == ["small"]
    assert raw.headers["x-cmesh-tier"] == "small"
    assert raw.headers["x-cmesh-request-id"] == cascade["request_id"]
    assert float(raw.headers["x-cmesh-latency-total-ms"]) >= 0


async def test_naming_a_tier_forces_it(client) -> None:
    reply = await client.chat.completions.create(
        model="large", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content.startswith("large:")
    assert reply.model_extra["cascade"]["tiers_tried"] == ["large"]


async def test_stream_reassembles_to_the_unary_text_with_usage_last(client) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "count to three"}]
    unary = await client.chat.completions.create(model="small", messages=messages)
    stream = await client.chat.completions.create(
        model="small", messages=messages, stream=True,
        stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished[0].model_extra["cascade"]["tier"] == "small"


async def test_completions_and_models(client) -> None:
    reply = await client.completions.create(model="cascade-mesh", prompt="one two",
                                            max_tokens=8)
    assert reply.choices[0].text == "small: one two "
    stream = await client.completions.create(model="small", prompt="one two", stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == reply.choices[0].text
    models = [m.id async for m in client.models.list()]
    assert models == ["cascade-mesh", "small", "large"]
    assert (await client.models.retrieve("large")).id == "large"


async def test_responses_unary_and_streamed(client) -> None:
    reply = await client.responses.create(model="small", input="tell me",
                                          instructions="be kind")
    assert reply.output_text == "small: tell me "
    assert reply.usage.output_tokens == 3 and reply.status == "completed"
    stream = await client.responses.create(model="small", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "tell me"}]}], stream=True)
    events = [e async for e in stream]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == reply.output_text and events[-1].type == "response.completed"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_completion_tokens": 100000}, "max_completion_tokens"),
    ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ({"extra_body": {"cascade": {"force_tier": "huge"}}}, "cascade.force_tier"),
    ({"extra_body": {"cascade": {"thresholds": {"route.large": 2}}}},
     "cascade.thresholds.route.large"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages"),
    ({"temperature": 5}, "temperature"),
    ({"stop": [""]}, "stop"),
    ({"seed": -3}, "seed"),
    ({"messages": [{"role": "user", "content": ""}] * 300 + [
        {"role": "user", "content": "hi"}]}, "messages"),
])
async def test_bad_bodies_are_400_naming_the_param(client, kwargs, param) -> None:
    body = {"model": "cascade-mesh", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(**body)
    assert err.value.status_code == 400
    assert err.value.param == param, err.value.body
    assert err.value.type == "invalid_request_error"


@pytest.mark.parametrize(("fragment", "param"), [
    ('"temperature": NaN', "temperature"),
    ('"top_p": Infinity', "top_p"),
    ('"cascade": {"thresholds": {"route.large": NaN}}', "cascade.thresholds.route.large"),
])
async def test_nan_and_infinity_are_400_naming_the_param(node, keys, fragment, param) -> None:
    """Python's JSON reader takes NaN and Infinity literals, so the door must refuse them."""
    body = ('{"model": "cascade-mesh", "messages": [{"role": "user", "content": "hi"}], '
            + fragment + "}")
    async with httpx.AsyncClient(base_url=node.http_base_url, timeout=20) as http:
        reply = await http.post("/chat/completions", content=body, headers={
            "authorization": f"Bearer {keys[1]}", "content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


async def test_wrong_key_unknown_model_and_bad_deadline(node, client) -> None:
    async with openai.AsyncOpenAI(base_url=node.http_base_url, api_key="cm_wrong",
                                  max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="gpt-9", messages=[
            {"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and err.value.param == "model"
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-cmesh-timeout-s": "soon"})
    assert err.value.param == "x-cmesh-timeout-s"


async def test_deadline_header_shorter_than_the_tier_is_504(node, client) -> None:
    slow = node.orchestrator.tiers["large"]
    slow.delay = 0.5
    try:
        with pytest.raises(openai.APIStatusError) as err:
            await client.chat.completions.create(
                model="large", messages=[{"role": "user", "content": "a b c d e"}],
                extra_headers={"x-cmesh-timeout-s": "0.3"})
        assert err.value.status_code == 504
    finally:
        slow.delay = 0.0


async def test_dead_tier_is_503_naming_it(node, client) -> None:
    tier = node.orchestrator.tiers["large"]
    tier.down = True
    try:
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(
                model="large", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 503
        assert err.value.body["tier"] == "large" and "'large'" in err.value.message
    finally:
        tier.down = False


async def test_unknown_route_is_an_openai_error(node) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(node.http_base_url + "/nothing")
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "not_found_error"


async def test_rate_limit_is_429_with_retry_after(keys, tmp_path: Path) -> None:
    tiers = {"small": FakeTier("small"), "large": FakeTier("large")}
    settings = GatewaySettings(port=0, http_port=0, api_keys_file=keys[0],
                               rate_limit_per_s=0.5, rate_limit_burst=2)
    async with GatewayNode(settings, tiers=tiers) as node, openai.AsyncOpenAI(
            base_url=node.http_base_url, api_key=keys[1], max_retries=0) as client:
        await client.models.list()
        await client.models.list()
        with pytest.raises(openai.RateLimitError) as err:
            await client.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "hi"}])
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.code == "resource_exhausted"


async def test_leaving_the_node_refuses_new_requests_and_lets_an_open_stream_finish(
        keys) -> None:
    tiers = {"small": FakeTier("small", delay=0.1), "large": FakeTier("large")}
    settings = GatewaySettings(port=0, http_port=0, api_keys_file=keys[0], drain_seconds=0.6,
                               grace_seconds=5)
    node = GatewayNode(settings, tiers=tiers)
    await node.__aenter__()
    base = node.http_base_url
    async with openai.AsyncOpenAI(base_url=base, api_key=keys[1], max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="small", stream=True,
            messages=[{"role": "user", "content": "one two three four five six"}])
        leaving = asyncio.create_task(node.__aexit__(None, None, None))
        await asyncio.sleep(0.2)  # draining: NOT_SERVING for drain_seconds
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(base.removesuffix("/v1") + "/health")).status_code == 503
        with pytest.raises(openai.InternalServerError) as err:
            await client.models.list()
        assert err.value.status_code == 503
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "small: one two three four five six "
        await asyncio.wait_for(leaving, 15)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(base + "/models")


async def test_langchains_chat_openai_gets_an_answer_unary_and_streamed(node, keys) -> None:
    chat = ChatOpenAI(base_url=node.http_base_url, api_key=keys[1],
                                       model="small", max_retries=0, timeout=20)
    reply = await chat.ainvoke("hello there")
    assert reply.content == "small: hello there "
    parts = [chunk.content async for chunk in chat.astream("hello there")]
    assert "".join(parts) == reply.content


async def test_a_client_leaving_a_stream_cancels_the_tiers_generation(node, keys) -> None:
    tier = node.orchestrator.tiers["small"]
    tier.delay, before = 0.2, tier.cancelled
    try:
        async with httpx.AsyncClient(timeout=10) as http, http.stream(
                "POST", node.http_base_url + "/chat/completions",
                headers={"authorization": f"Bearer {keys[1]}"},
                json={"model": "small", "stream": True, "messages": [
                    {"role": "user", "content": "a b c d e f g h i j k l"}]}) as reply:
            async for line in reply.aiter_lines():
                if '"content":"small:' in line.replace(" ", ""):
                    break  # leave after the first word
        for _ in range(50):
            if tier.cancelled > before:
                break
            await asyncio.sleep(0.1)
        assert tier.cancelled == before + 1
    finally:
        tier.delay = 0.0
