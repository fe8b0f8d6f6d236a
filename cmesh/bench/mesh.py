"""What the benchmarks that start a local mesh share: a fresh state folder with a bench key,
and the broker flags that serve both tiers from the one SmolLM2 engine (two cores hold one)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def bench_state(name: str) -> tuple[Path, Path, str]:
    """A new state folder for one run of `cmesh bench NAME`, its API keys file and the
    `bench` tenant's key."""
    from cmesh.stack import ensure_dev_keys

    state = Path(tempfile.mkdtemp(prefix=f"cmesh-bench-{name}-"))
    keys_file = ensure_dev_keys(state, ("bench",))
    return state, keys_file, (state / "bench-api-key").read_text().strip()


# Broker flags: the small and the large tier both on `backend-small` (`{name}` becomes its
# address). In `args`, not `peer_args`, so the stack reads the tiers from them and gives the
# broker's NATS user its tiers' queues (`cmesh.stack.broker_tiers`).
ONE_ENGINE_BROKER = ("--backends", "small={backend-small};large={backend-small}",
                     "--load_poll_s", "0.05")


def one_engine_mesh(gateway_peers: Callable[[dict[str, str]], list[str]]) -> list[Any]:
    """The stack's services with one SmolLM2 engine behind both tiers, the gateway through
    the broker with `gateway_peers` flags (a list of `cmesh.stack.ServiceSpec`)."""
    from cmesh.stack import ServiceSpec

    return [ServiceSpec("backend-small", "services.backend", ("--served_name", "small")),
            ServiceSpec("cache", "services.cache", needs_nats=True),
            ServiceSpec("classifier", "services.classifier"),
            ServiceSpec("broker", "services.broker", ONE_ENGINE_BROKER, needs_nats=True,
                        needs=("backend-small",)),
            ServiceSpec("gateway", "services.gateway", needs_nats=True,
                        needs=("backend-small", "cache", "classifier", "broker"),
                        peer_args=gateway_peers)]


def door_gateway(keys_file: Path, port_file: Path) -> Callable[[Mapping[str, str]], list[str]]:
    """Gateway flags for a benchmark through the OpenAI door: the cache and classifier of
    the stack, route policy, rate limits out of the way, the door on a free port written
    to `port_file`."""
    def peers(addresses: Mapping[str, str]) -> list[str]:
        return ["--cache_address", addresses["cache"],
                "--classifier_address", addresses["classifier"],
                "--api_keys_file", str(keys_file), "--policy", "route",
                "--rate_limit_per_s", "10000", "--rate_limit_burst", "10000",
                "--http_port", "0", "--http_port_file", str(port_file)]
    return peers
