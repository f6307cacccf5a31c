"""Helpers for tests that drive the real `sandbox` command and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def sandbox_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
                **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the real `sandbox` command (python -m sandbox) as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, check=False, **kw,  # type: ignore[arg-type]
    )


def make_workspace(path: Path) -> Path:
    """Create `path` owned by the agent user a root supervisor runs commands as."""
    from sandbox.jail.users import ensure_agent_user

    agent = ensure_agent_user()
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, agent.uid, agent.gid)
    return path


def wait_for(pred: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> object:
    """Poll `pred` until it is truthy or `timeout` passes (bounded: never spins forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts). One read: a check of
    existence then of status races the reaper (CI saw NoSuchProcess in between)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree(pid: int) -> list[int]:
    """`pid` and its descendants now ([] once it is gone)."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def tree_argvs(pid: int) -> list[str]:
    """The command lines in `pid`'s tree now (one that exits meanwhile is skipped)."""
    out = []
    for p in tree(pid):
        try:
            out.append(" ".join(psutil.Process(p).cmdline()))
        except psutil.Error:
            continue
    return out


def procs_matching(needle: str) -> list[psutil.Process]:
    """Host processes whose command line starts with `needle`."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if " ".join(p.info["cmdline"] or []).startswith(needle):
                out.append(p)
        except psutil.Error:
            continue
    return out
