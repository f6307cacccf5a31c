"""Benchmark: confirm keypress -> every process of the session gone, with real sandboxes.

    python -m sandbox_tui.bench_kill [--trials 5]     (or `python -m tui.bench_kill`)

Each trial starts `sandbox run -- sleep 1000` in its own process (so the kill goes through
the store to another owner, as in production), opens the TUI headless on that store,
selects the row, presses `k`, and times from pressing `y` until the jail's whole process
tree is gone (a 1 ms watcher thread) and until the store says killed. Goal: <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from sandbox.record import Store

from .app import SandboxApp
from .confirm import ConfirmModal
from .sessions_table import SessionsTable


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(pred: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark setup timed out")
        time.sleep(0.01)


async def _one_trial(root: Path) -> tuple[float, float]:
    state = root / "state"
    env = {**os.environ, "SANDBOX_STATE_DIR": str(state)}
    owner = subprocess.Popen(
        # No --workdir: the runtime makes a fresh workspace the agent user owns.
        [sys.executable, "-m", "sandbox", "run", "-q", "--", "sleep", "1000"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: (state / "sandbox.db").exists(), 20)
        store = Store(state / "sandbox.db")
        _wait(lambda: any(s["jail_pid"] and s["state"] == "running"
                          for s in store.list_sessions()), 20)
        session = store.list_sessions()[0]
        jail = psutil.Process(session["jail_pid"])
        _wait(lambda: any("sleep" in " ".join(c.cmdline())
                          for c in jail.children(recursive=True)), 10)
        tree = [jail.pid, *(c.pid for c in jail.children(recursive=True))]

        app = SandboxApp(store, poll_interval=0.25)
        gone_at: list[float] = []
        killed_at: list[float] = []
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one(SessionsTable)
            while table.row_count < 1:
                await pilot.pause(0.01)
            await pilot.press("k")
            while not isinstance(app.screen, ConfirmModal):
                await pilot.pause(0.01)

            def watch() -> None:
                while any(_alive(p) for p in tree):
                    time.sleep(0.001)
                gone_at.append(time.perf_counter())

            def watch_store() -> None:
                watcher = Store(store.path)
                while watcher.get_session(session["id"])["state"] != "killed":
                    time.sleep(0.001)
                killed_at.append(time.perf_counter())
                watcher.close()

            threads = [threading.Thread(target=watch), threading.Thread(target=watch_store)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            await pilot.press("y")
            deadline = time.monotonic() + 10
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                await pilot.pause(0.005)
        store.close()
        if not gone_at or not killed_at:
            raise RuntimeError("the session did not die within 10 s")
        return gone_at[0] - t0, killed_at[0] - t0
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--dir", default="/var/tmp", help="where to put per-trial state")
    args = parser.parse_args(argv)
    gone, killed = [], []
    for i in range(args.trials):
        root = Path(tempfile.mkdtemp(prefix="sandbox-bench-kill-", dir=args.dir))
        try:
            g, k = asyncio.run(_one_trial(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        gone.append(g * 1000)
        killed.append(k * 1000)
        print(f"trial {i + 1}: processes gone {g * 1000:6.1f} ms, store killed "
              f"{k * 1000:6.1f} ms", flush=True)
    print(f"keypress-confirmed -> processes gone: median {statistics.median(gone):.1f} ms, "
          f"max {max(gone):.1f} ms (goal <= 200 ms); store says killed: median "
          f"{statistics.median(killed):.1f} ms")
    return 0 if max(gone) <= 200 else 1


if __name__ == "__main__":
    sys.exit(main())
