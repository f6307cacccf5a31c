"""Real process trees for the GPU tests; the fake NVML reports their host PIDs."""

from __future__ import annotations

import contextlib
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sandbox.events import ListEmit


def skip_if_driver() -> None:
    """Tests of the no-driver path only mean something on a host without one."""
    if ctypes.util.find_library("nvidia-ml") or Path("/dev/nvidiactl").exists():
        pytest.skip("an NVIDIA driver is present: run scripts/gpu_smoke.py instead")


@dataclass
class Tree:
    """root sh -> (child sh -> grandchild sleep, sleep); in its own process group."""

    proc: subprocess.Popen[bytes]
    child: int
    grandchild: int

    @property
    def root(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)




def start_tree() -> Tree:
    # `; :` stops sh from exec'ing the last command, so each level stays a real process.
    proc = subprocess.Popen(["sh", "-c", 'sh -c "sleep 30; :" & sleep 30; :'],
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        root = psutil.Process(proc.pid)
        for child in root.children():
            grand = child.children()
            if grand:
                return Tree(proc, child.pid, grand[0].pid)
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("process tree did not come up")


@pytest.fixture
def tree() -> Iterator[Tree]:
    t = start_tree()
    try:
        yield t
    finally:
        t.kill()


@pytest.fixture
def other_tree() -> Iterator[Tree]:
    t = start_tree()
    try:
        yield t
    finally:
        t.kill()


class Sessions:
    """A sessions provider, per-session ListEmits and a recording kill callback."""

    def __init__(self) -> None:
        self.entries: dict[str, object] = {}
        self.emits: dict[str, ListEmit] = {}
        self.host = ListEmit()
        self.kills: list[tuple[str, str]] = []
        self.kill_action: dict[str, Tree] = {}

    def __call__(self) -> dict[str, object]:
        return dict(self.entries)

    def emit_for(self, sid: str) -> ListEmit | None:
        return self.emits.setdefault(sid, ListEmit()) if sid in self.entries else None

    def kill(self, sid: str, reason: str) -> None:
        self.kills.append((sid, reason))
        if sid in self.kill_action:
            self.kill_action[sid].kill()
            self.entries.pop(sid, None)


@pytest.fixture
def sessions() -> Sessions:
    return Sessions()
