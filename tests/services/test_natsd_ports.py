"""Ports for child servers, and what a nats-server that cannot start says about it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.common.natsd import (
    PORT_FLOOR,
    ClusterBlock,
    NatsServer,
    ephemeral_range,
    free_port,
)


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if low - PORT_FLOOR >= 1000:  # room below the range (Linux's default: 32768)
        assert all(PORT_FLOOR <= p < low for p in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.nats
async def test_a_server_that_cannot_bind_names_its_port_and_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        server = NatsServer(port=port)
        with pytest.raises(RuntimeError, match=rf"port {port} exited with 1: .*in use"):
            await server.start()
        await server.__aexit__(None, None, None)
        assert not server.log_path.exists()


@pytest.mark.nats
async def test_a_clustered_server_whose_route_port_is_taken_fails_its_start(
        tmp_path: Path) -> None:
    """nats-server says it is ready before it opens its route listener; start() waits for
    that listener too, so the start fails, naming the cause, rather than a later wait."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        route = int(taken.getsockname()[1])
        server = NatsServer(store_dir=tmp_path / "n0", server_name="n0",
                            cluster=ClusterBlock("c", route, [f"nats://127.0.0.1:{route}"]))
        with pytest.raises(RuntimeError, match=r"exited with 1: .*in use"):
            await server.start()
