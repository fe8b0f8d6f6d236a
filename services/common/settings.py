"""Settings every gRPC service shares; each service subclasses with its env prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
