"""TLS on the gateway port, and mutual TLS between the gateway and an internal service."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from cascade.classifiers import make_classifier
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings
from services.gateway.auth import add_key
from services.gateway.main import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.gateway.certs import make_ca
from tests.gateway.fakes import FakeTier


async def test_internal_service_takes_only_mesh_callers_and_gateway_port_is_tls(
        tmp_path: Path) -> None:
    pki = make_ca(tmp_path)
    key = add_key(tmp_path / "keys", "acme")
    internal = ClassifierSettings(port=0, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                                  tls_client_ca=pki["ca"])
    tiers = {"small": FakeTier("small"), "large": FakeTier("large")}
    async with ClassifierNode(internal, classifier=make_classifier("length")) as classifier:
        address = f"localhost:{classifier.port}"
        # A caller without a mesh certificate is turned away at the handshake.
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        async with grpc.aio.secure_channel(address, creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await classifier_pb2_grpc.ClassifierStub(channel).Score(
                    classifier_pb2.ScoreRequest(prompts=["hi"]), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        def gateway(**mesh: Path) -> GatewaySettings:
            return GatewaySettings(port=0, api_keys_file=tmp_path / "keys", mesh_ca=pki["ca"],
                                   classifier_address=address, tls_cert=pki["server_cert"],
                                   tls_key=pki["server_key"], classifier_timeout_ms=3000,
                                   **mesh)

        client = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        auth = (("authorization", f"Bearer {key}"),)
        for mesh, status in (({"mesh_cert": pki["gateway_cert"],
                               "mesh_key": pki["gateway_key"]}, "scored"), ({}, "unavailable")):
            async with GatewayNode(gateway(**mesh), tiers=tiers) as node, \
                    grpc.aio.secure_channel(f"localhost:{node.port}", client) as channel:
                reply = await gateway_pb2_grpc.GatewayStub(channel).Ask(
                    gateway_pb2.AskRequest(prompt="hello there"), metadata=auth, timeout=10)
                assert reply.metadata.classifier_status == status
                assert reply.text
        async with GatewayNode(gateway(), tiers=tiers) as node, \
                grpc.aio.insecure_channel(f"localhost:{node.port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await gateway_pb2_grpc.GatewayStub(plain).Ask(
                    gateway_pb2.AskRequest(prompt="hello"), metadata=auth, timeout=5)


async def test_http_door_serves_tls_with_the_gateway_certificate(tmp_path: Path) -> None:
    pki = make_ca(tmp_path)
    key = add_key(tmp_path / "keys", "acme")
    tiers = {"small": FakeTier("small"), "large": FakeTier("large")}
    settings = GatewaySettings(port=0, http_port=0, api_keys_file=tmp_path / "keys",
                               tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    async with GatewayNode(settings, tiers=tiers) as node:
        assert node.http_base_url.startswith("https://")
        url = f"https://localhost:{node.http.port}/v1"
        trusted = httpx.AsyncClient(verify=ssl.create_default_context(cafile=pki["ca"]))
        async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0,
                                      http_client=trusted) as client:
            reply = await client.chat.completions.create(
                model="small", messages=[{"role": "user", "content": "hello there"}])
            assert reply.choices[0].message.content == "small: hello there "
        async with httpx.AsyncClient(timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):  # plain HTTP, or an untrusted certificate
                await plain.get(f"http://localhost:{node.http.port}/health")
            with pytest.raises(httpx.ConnectError):
                await plain.get(f"https://localhost:{node.http.port}/health")
