"""What the benchmarks that start a local mesh share: a fresh state folder with a bench key,
and the broker flags that serve both tiers from the one SmolLM2 engine (two cores hold one)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def bench_state(name: str) -> tuple[Path, Path, str]:
    """A new state folder for one run of `cmesh bench NAME`, its API keys file and the
    `bench` tenant's key."""
    from cmesh.stack import ensure_dev_keys

    state = Path(tempfile.mkdtemp(prefix=f"cmesh-bench-{name}-"))
    keys_file = ensure_dev_keys(state, ("bench",))
    return state, keys_file, (state / "bench-api-key").read_text().strip()


def one_engine_broker(addresses: dict[str, str]) -> list[str]:
    """Broker flags: the small and the large tier both on `backend-small`."""
    backend = addresses["backend-small"]
    return ["--backends", f"small={backend};large={backend}", "--load_poll_s", "0.05"]
