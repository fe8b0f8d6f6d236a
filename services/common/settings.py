"""Settings every gRPC service shares; each service subclasses with its env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.regions import REGION_PATTERN, check_region

NATS_CREDENTIALS_DOC = (
    "File holding this service's NATS user and password as one line '<user>:<password>' "
    "(mode 0600; the local stack writes one per service). Credentials never go on a command "
    "line: a --nats_url with a password is refused (the environment variable is fine).")


class ServiceSettings(BaseSettings):
    """Listen address, metrics port and shutdown grace of one service."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="Prometheus /metrics port; 0 picks a free one, unset turns it off.",
    )
    port_file: Path | None = Field(
        None, description="Write the bound gRPC port here once listening (for port 0)."
    )
    grace_seconds: float = Field(
        5.0, ge=0, le=600, description="How long in-flight calls may finish on SIGTERM."
    )
    drain_seconds: float = Field(
        0.0, ge=0, le=60,
        description="On SIGTERM, report NOT_SERVING this long before refusing new calls "
                    "(so load balancers stop sending first).",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate of this server's port (with tls_key): TLS on.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA of the mesh: with it, only callers presenting a "
                          "certificate it signed get in (mutual TLS).")
    tls_allowed_callers: list[str] = Field(
        default_factory=list,
        description="With tls_client_ca: only callers whose certificate has one of these "
                    "names (common name or DNS name) may call this service's methods "
                    "(PERMISSION_DENIED otherwise; health and reflection stay open to any "
                    "mesh certificate). Empty: any certificate tls_client_ca signed. JSON "
                    "list, e.g. '[\"gateway\"]'.")
    region: str = Field(
        "", description="This service's region: the name of its NATS cluster in a "
                        f"supercluster ({REGION_PATTERN}). The JetStream streams it creates "
                        "are placed there and named per region (docs/regions.md). Empty: "
                        "one region, unnamed streams as before.")
    otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC collector for OpenTelemetry traces (host:port or URL); "
                          "unset turns tracing off."
    )

    @field_validator("region")
    @classmethod
    def _region_name(cls, region: str) -> str:
        return check_region(region)

    @model_validator(mode="after")
    def _tls_complete(self) -> ServiceSettings:
        check_pem_set(self, cert="tls_cert", key="tls_key", ca="tls_client_ca",
                      ca_needs_cert=True)
        if self.tls_allowed_callers and self.tls_client_ca is None:
            raise ValueError("tls_allowed_callers needs tls_client_ca (names come from "
                             "verified client certificates)")
        return self

    def server_credentials(self) -> object | None:
        """grpc server credentials from the TLS settings, None for a plaintext port."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        import grpc

        ca = self.tls_client_ca.read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(self.tls_key.read_bytes(), self.tls_cert.read_bytes())],
            root_certificates=ca, require_client_auth=ca is not None)


PEER_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""Options of a channel to a peer service: gRPC's default reconnect backoff grows to
120 s, so a backend back after a minute's outage (a vLLM restart) would be dialled
again only up to two minutes later; capped at 2 s it is back within about 2 s."""


def channel_credentials(ca: Path, cert: Path | None = None,
                        key: Path | None = None) -> Any:
    """grpc channel credentials that trust `ca` and, with `cert`/`key`, present that
    client certificate (mutual TLS)."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None)


def check_pem_set(settings: object, *, cert: str, key: str, ca: str,
                  ca_needs_cert: bool) -> None:
    """Raise ValueError unless the named certificate and key are set together, and the
    CA goes with them: a server's client CA needs its own certificate (mutual TLS is
    TLS), a client's certificate needs the CA it checks servers with."""
    cert_set = getattr(settings, cert) is not None
    if cert_set != (getattr(settings, key) is not None):
        raise ValueError(f"{cert} and {key} go together")
    ca_set = getattr(settings, ca) is not None
    if ca_needs_cert and ca_set and not cert_set:
        raise ValueError(f"{ca} needs {cert} and {key} (mutual TLS is TLS)")
    if not ca_needs_cert and cert_set and not ca_set:
        raise ValueError(f"{cert} needs {ca}")
