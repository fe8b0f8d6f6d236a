"""Container health probe: `python -m services.common.probe HOST:PORT [SERVICE]`.

Exits 0 when the grpc.health.v1 status is SERVING, 1 otherwise.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe(address: str, service: str = "", timeout: float = 3.0) -> bool:
    """True when `address` reports SERVING for `service` ("" = the whole server)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    sys.exit(0 if probe(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "") else 1)
