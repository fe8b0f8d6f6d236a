"""The local stack's certificate authority: one CA, one certificate per service.

Made with `cryptography` at the stack's first start in `<state dir>/tls/`
(`ca.pem`, `ca.key`, `<name>.pem`, `<name>.key`; keys 0600, the folder 0700)
and reused while every certificate is valid for at least a day more; a missing
or expiring one is reissued by the same CA. Each certificate names its
service in its common name and serves as both its server certificate (SANs
`localhost`, `127.0.0.1`) and its client certificate: a service checks who
calls it by that name (`services.common.callers`). `cmesh` is the stack's own
name: its health probes and `cmesh status`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

STACK_IDENTITY = "cmesh"
VALID_DAYS = 365


@dataclass(frozen=True)
class MeshPki:
    """Where the CA and each name's certificate and key are."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def channel_credentials(self, name: str = STACK_IDENTITY) -> grpc.ChannelCredentials:
        """grpc channel credentials presenting `name`'s certificate."""
        from services.common.settings import channel_credentials

        credentials: grpc.ChannelCredentials = channel_credentials(
            self.ca, self.cert(name), self.key(name))
        return credentials


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _fresh(path: Path, now: datetime.datetime) -> bool:
    from cryptography import x509

    if not path.is_file():
        return False
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return bool(cert.not_valid_after_utc - now > datetime.timedelta(days=1))


def ensure_mesh_pki(folder: Path, names: Iterable[str]) -> MeshPki:
    """The CA and a certificate for each of `names` (and `STACK_IDENTITY`) in `folder`,
    made or reissued where missing or expiring."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = MeshPki(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def builder(subject: x509.Name, issuer: x509.Name,
                key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))

    ca_key_path = folder / "ca.key"
    if _fresh(pki.ca, now) and ca_key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:  # a new CA: every certificate it signed before is reissued below
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (builder(name("cascade-mesh local CA"), name("cascade-mesh local CA"), ca_key)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        _write_private(ca_key_path, pem_key(ca_key))
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        for old in folder.glob("*.pem"):
            if old != pki.ca:
                old.unlink()
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH])
    for cn in sorted({*names, STACK_IDENTITY}):
        if _fresh(pki.cert(cn), now) and pki.key(cn).is_file():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(name(cn), ca_cert.subject, key).add_extension(san, critical=False)
                .add_extension(usage, critical=False).sign(ca_key, hashes.SHA256()))
        _write_private(pki.key(cn), pem_key(key))
        pki.cert(cn).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def stack_pki(state_dir: Path) -> MeshPki | None:
    """The running stack's PKI, when it has one (for probes and `cmesh status`)."""
    pki = MeshPki(state_dir / "tls")
    return pki if pki.cert(STACK_IDENTITY).is_file() else None
