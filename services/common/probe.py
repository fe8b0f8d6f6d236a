"""Container health probe: `python -m services.common.probe HOST:PORT [SERVICE]`.

Exits 0 when the grpc.health.v1 status is SERVING, 1 otherwise. With
`CMESH_PROBE_CA` set (and `CMESH_PROBE_CERT`/`CMESH_PROBE_KEY`, e.g. the
container's own service certificate) it probes over mutual TLS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe(address: str, service: str = "", timeout: float = 3.0,
          credentials: grpc.ChannelCredentials | None = None) -> bool:
    """True when `address` reports SERVING for `service` ("" = the whole server); with
    `credentials`, over (mutual) TLS."""
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _env_credentials() -> grpc.ChannelCredentials | None:
    from services.common.settings import channel_credentials

    ca, cert, key = (os.environ.get(f"CMESH_PROBE_{n}") for n in ("CA", "CERT", "KEY"))
    if not ca:
        return None
    return channel_credentials(Path(ca), Path(cert) if cert else None,
                               Path(key) if key else None)


if __name__ == "__main__":
    sys.exit(0 if probe(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "",
                        credentials=_env_credentials()) else 1)
