"""The stack's local CA and the caller check: only named mesh certificates get in."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cascade.classifiers import make_classifier
from cmesh.pki import STACK_IDENTITY, ensure_mesh_pki
from protos.classifier.v1 import classifier_pb2, classifier_pb2_grpc
from services.classifier.main import ClassifierNode
from services.classifier.settings import ClassifierSettings
from services.common.settings import channel_credentials

pytestmark = pytest.mark.timeout(120)


def test_the_ca_is_made_once_with_private_keys(tmp_path: Path) -> None:
    pki = ensure_mesh_pki(tmp_path / "tls", ["gateway", "cache"])
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    for name in ("gateway", "cache", STACK_IDENTITY):
        assert pki.key(name).stat().st_mode & 0o777 == 0o600
        assert pki.cert(name).is_file()
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    before = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    again = ensure_mesh_pki(tmp_path / "tls", ["gateway", "cache", "broker"])
    after = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    assert all(after[name] == data for name, data in before.items())  # kept as they were
    assert again.cert("broker").is_file() and "broker.pem" not in before


async def test_only_allowed_certificates_call_methods_and_any_mesh_one_probes(
        tmp_path: Path) -> None:
    pki = ensure_mesh_pki(tmp_path, ["gateway", "broker", "classifier"])
    settings = ClassifierSettings(port=0, tls_cert=pki.cert("classifier"),
                                  tls_key=pki.key("classifier"), tls_client_ca=pki.ca,
                                  tls_allowed_callers=["gateway"])
    request = classifier_pb2.ScoreRequest(prompts=["hi"])
    async with ClassifierNode(settings, classifier=make_classifier("length")) as node:
        address = f"127.0.0.1:{node.port}"

        async def score(credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
            async with grpc.aio.secure_channel(address, credentials) as channel:
                try:
                    await classifier_pb2_grpc.ClassifierStub(channel).Score(request, timeout=5)
                except grpc.aio.AioRpcError as err:
                    return err.code()
                return grpc.StatusCode.OK

        assert await score(channel_credentials(pki.ca)) == grpc.StatusCode.UNAVAILABLE
        for name in ("broker", STACK_IDENTITY):
            assert await score(pki.channel_credentials(name)) == \
                grpc.StatusCode.PERMISSION_DENIED
        assert await score(pki.channel_credentials("gateway")) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(address) as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await classifier_pb2_grpc.ClassifierStub(plain).Score(request, timeout=5)
        async with grpc.aio.secure_channel(address, pki.channel_credentials()) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_allowed_callers_need_a_client_ca(tmp_path: Path) -> None:
    pki = ensure_mesh_pki(tmp_path, ["classifier"])
    with pytest.raises(ValueError, match="tls_client_ca"):
        ClassifierSettings(tls_cert=pki.cert("classifier"), tls_key=pki.key("classifier"),
                           tls_allowed_callers=["gateway"])
