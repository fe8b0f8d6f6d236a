"""The local stack (`LocalStack`, as `cmesh up` starts it, with its defaults) lets no one in.

One real stack: nats-server, backend-small (SmolLM2 on vLLM), cache,
classifier, broker and the gateway, each a child process. A local process
without the mesh's certificate is turned away by every internal service, a
planted answer never reaches a tenant, no command line holds a NATS password,
and the gateway's NATS user cannot read the cache log.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cmesh.stack import LocalStack, default_specs, ensure_dev_keys, probe_stack, select_specs
from protos.backend.v1 import backend_pb2, backend_pb2_grpc
from protos.cache.v1 import cache_pb2, cache_pb2_grpc
from protos.common.v1 import common_pb2
from protos.gateway.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = [pytest.mark.vllm, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(900)]
QUESTION = "What is the capital of France?"
PLANTED = "PLANTED: the capital of France is Atlantis."
SERVICES = {"backend-small", "cache", "classifier", "broker", "gateway"}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path
                ) -> AsyncIterator[LocalStack]:
    state = tmp_path_factory.mktemp("stack")
    specs = select_specs(default_specs(keys_file=ensure_dev_keys(state)), SERVICES)
    async with LocalStack(specs, state) as running:
        yield running


def foreign_credentials(folder: Path) -> grpc.ChannelCredentials:
    """A client certificate of a CA the mesh never heard of (trusting the mesh's CA)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    return grpc.ssl_channel_credentials(
        root_certificates=(folder / "ca.pem").read_bytes(),
        private_key=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM))


def scope(tenant: str = "dev") -> cache_pb2.Scope:
    return cache_pb2.Scope(tenant=tenant, sampling=common_pb2.SamplingParams(temperature=0.0))


async def cache_calls(channel: grpc.aio.Channel) -> dict[str, grpc.StatusCode]:
    """The status of each cache method called on `channel` (OK when it answered)."""
    stub = cache_pb2_grpc.CacheStub(channel)
    calls = {
        "Store": stub.Store(cache_pb2.StoreRequest(scope=scope(), prompt=QUESTION,
                                                   answer=PLANTED), timeout=10),
        "Lookup": stub.Lookup(cache_pb2.LookupRequest(scope=scope(), prompt=QUESTION),
                              timeout=10),
        "Invalidate": stub.Invalidate(cache_pb2.InvalidateRequest(tenant="guest",
                                                                  whole_tenant=True),
                                      timeout=10),
        "Stats": stub.Stats(cache_pb2.StatsRequest(), timeout=10),
    }
    codes = {}
    for name, call in calls.items():
        try:
            await call
            codes[name] = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            codes[name] = err.code()
    return codes


async def complete(channel: grpc.aio.Channel) -> grpc.StatusCode:
    request = backend_pb2.GenerateRequest(
        prompt="Say hi.", chat=True, sampling=common_pb2.SamplingParams(max_tokens=4))
    try:
        await backend_pb2_grpc.BackendStub(channel).Complete(request, timeout=30)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_no_local_process_without_the_gateway_certificate_reaches_the_cache_or_a_backend(
        stack: LocalStack, tmp_path: Path) -> None:
    assert stack.pki is not None
    cache = stack.services["cache"].address
    backend = stack.services["backend-small"].address
    turned_away = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED,
                   grpc.StatusCode.PERMISSION_DENIED}
    strangers = {
        "plaintext": None,
        "TLS, no client certificate": grpc.ssl_channel_credentials(stack.pki.ca.read_bytes()),
        "a certificate of another CA": foreign_credentials(stack.pki.folder),
        "the stack's own certificate": stack.pki.channel_credentials(),
        "the classifier's certificate": stack.pki.channel_credentials("classifier"),
    }
    for who, credentials in strangers.items():
        for address in (cache, backend):
            channel = (grpc.aio.insecure_channel(address) if credentials is None
                       else grpc.aio.secure_channel(address, credentials))
            async with channel:
                if address == cache:
                    codes = await cache_calls(channel)
                    assert set(codes.values()) <= turned_away, (who, codes)
                else:
                    assert await complete(channel) in turned_away, who
    # The stack's own certificate probes every service and reads a backend's model info
    # (`cmesh status`), nothing more.
    for service in stack.services.values():
        assert probe_stack(service.address, stack.state_dir), service.spec.name
    async with grpc.aio.secure_channel(backend, stack.pki.channel_credentials()) as ch:
        info = await backend_pb2_grpc.BackendStub(ch).GetModelInfo(
            backend_pb2.GetModelInfoRequest(), timeout=10)
        assert info.model
    # The broker's certificate may call the backends, not the cache.
    async with grpc.aio.secure_channel(backend, stack.pki.channel_credentials("broker")) as ch:
        assert await complete(ch) == grpc.StatusCode.OK
    async with grpc.aio.secure_channel(cache, stack.pki.channel_credentials("broker")) as ch:
        assert set((await cache_calls(ch)).values()) == {grpc.StatusCode.PERMISSION_DENIED}


async def test_the_gateway_answers_through_the_mesh_and_never_serves_a_planted_answer(
        stack: LocalStack) -> None:
    key = (stack.state_dir / "dev-api-key").read_text().strip()
    auth = (("authorization", f"Bearer {key}"),)
    request = gateway_pb2.AskRequest(prompt=QUESTION,
                                     policy=gateway_pb2.PolicyOverrides(force_tier="small"))
    request.sampling.max_tokens = 16
    async with grpc.aio.insecure_channel(stack.services["gateway"].address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        first = await stub.Ask(request, metadata=auth, timeout=300)
        assert "PLANTED" not in first.text and not first.metadata.cache_hit
        assert first.metadata.cache_stored, first.metadata.cache_store_reason  # over mTLS
        second = await stub.Ask(request, metadata=auth, timeout=120)
        assert second.metadata.cache_hit and second.text == first.text
    log = stack.services["gateway"].log_path.read_text(errors="replace")
    assert "side call failed" not in log  # warm-up reached cache and classifier


async def test_a_bad_tenant_is_refused_naming_the_field(stack: LocalStack) -> None:
    assert stack.pki is not None
    credentials = stack.pki.channel_credentials("gateway")
    async with grpc.aio.secure_channel(stack.services["cache"].address, credentials) as ch:
        stub = cache_pb2_grpc.CacheStub(ch)
        for tenant in ("dev/../guest", "t" * 10_000):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Store(cache_pb2.StoreRequest(scope=scope(tenant), prompt=QUESTION,
                                                        answer="x"), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (err.value.details() or "").startswith("scope.tenant:")


def stack_pids(stack: LocalStack) -> list[int]:
    """nats-server and every process of each service's session (vLLM's engine included)."""
    assert stack.nats is not None and stack.nats._proc is not None
    leaders = {s.proc.pid for s in stack.services.values()}
    pids = [stack.nats._proc.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) in leaders:  # the session id
            pids.append(int(stat.parent.name))
    return pids


async def test_no_command_line_holds_a_nats_password(stack: LocalStack) -> None:
    passwords = [u.password.encode() for u in stack.nats_users.values()]
    assert len(passwords) == 3
    pids = stack_pids(stack)
    assert len(pids) > len(stack.services)  # vLLM's engine core is in there too
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert not any(p in cmdline for p in passwords), cmdline
        assert b"PRIVATE KEY" not in cmdline
    assert stack.nats.config_path.stat().st_mode & 0o777 == 0o600  # type: ignore[union-attr]
    for name in stack.nats_users:
        path = stack.nats_credentials(name)
        assert path is not None and path.stat().st_mode & 0o777 == 0o600


async def test_the_gateway_nats_user_cannot_subscribe_to_the_cache_log(
        stack: LocalStack) -> None:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(stack.nats_url, error_cb=on_error, allow_reconnect=False,
                            **stack.nats_options("gateway"))
    try:
        for subject in ("cmesh.cache.log", "_INBOX_cache.>"):
            await nc.subscribe(subject)
        await nc.flush(timeout=5)
        await asyncio.sleep(0.3)
        assert any('subscription to "cmesh.cache.log"' in e for e in errors), errors
        assert any('subscription to "_inbox_cache.>"' in e for e in errors), errors
        with pytest.raises(Exception):  # noqa: B017 - refused: no consumer on the log
            await nc.jetstream(timeout=3).subscribe("cmesh.cache.log", stream="CMESH_CACHE")
    finally:
        await nc.close()
