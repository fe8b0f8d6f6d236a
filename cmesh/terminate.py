"""`asyncio.run` for commands that start servers: SIGTERM stops them as Ctrl-C does.

Python's default SIGTERM ends the process at once, without running a single `finally`,
so a `cmesh up` or `cmesh bench system` stopped by `kill`, a CI timeout or a service
manager left behind every server it had started in its own session (vLLM's engine core,
nats-server, LiteLLM). `run` turns SIGTERM into a cancellation of the main task, as
asyncio already does for SIGINT: each `async with` and `finally` on the way out runs
and stops what it started, and the process then exits with status 143 (128 + SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
TERMINATED = 128 + signal.SIGTERM


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion; on SIGTERM cancel it, let it clean up, exit 143."""
    terminated = False

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await main
        finally:
            # a handler installed meanwhile (`wait_for_signal`) may already have reset it
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(TERMINATED) from None
        raise
