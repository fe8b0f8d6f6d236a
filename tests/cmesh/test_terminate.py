"""`cmesh.terminate.run`: SIGTERM cancels the main task, its cleanup runs, the exit is 143."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# a command that starts a server in its own session (as the stack and the benches do)
# and stops it on its way out
COMMAND = textwrap.dedent("""
    import asyncio, os, signal, subprocess, sys
    from cmesh import terminate

    async def main() -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        print(child.pid, flush=True)
        try:
            await asyncio.sleep(600)
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            print("stopped", flush=True)

    terminate.run(main())
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_runs_the_cleanup_and_exits_143() -> None:
    proc = subprocess.Popen([sys.executable, "-c", COMMAND], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert _alive(child)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped" in out
    assert not _alive(child)


def test_a_finished_command_returns_its_value() -> None:
    from cmesh import terminate

    async def answer() -> int:
        return 42

    assert terminate.run(answer()) == 42
    # the handler is gone afterwards: SIGTERM is the default again
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
