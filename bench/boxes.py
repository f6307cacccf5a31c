"""Sandboxes and processes for the rows: start/close helpers, a session's process tree,
and a bounded wait for "every process gone" read straight from /proc."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

from sandbox import Sandbox, load_profile
from sandbox.jail import firejail, spawn
from sandbox.jail.launch import Launch
from sandbox.jail.profile import Profile

from .core import Ctx


def profile_file(ctx: Ctx, name: str, text: str) -> Path:
    """Write a bench-only profile (TOML) into the run's dir and return its path."""
    path = ctx.root / "profiles" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextlib.contextmanager
def sandbox(ctx: Ctx, profile: Profile | str = "default", ws: Path | None = None
            ) -> Iterator[Sandbox]:
    """A started sandbox in a fresh agent-owned workspace, always closed."""
    sb = Sandbox(profile=profile, workdir=ws or ctx.workspace())
    try:
        sb.start()
        yield sb
    finally:
        sb.close()


def tree(pid: int | None) -> list[int]:
    """`pid` and all its descendants (the jail: firejail, its sandbox child, bash, ...)."""
    if not pid:
        return []
    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.Error:
        return []


def session_pids(sb: Sandbox) -> list[int]:
    """Every host process of a live session (the bench reads the session's jail pid)."""
    return tree(sb._session.jail_pid)


def memory(pids: list[int]) -> tuple[float, float]:
    """RSS and PSS of these processes, in bytes (one that exited meanwhile counts 0)."""
    rss = pss = 0.0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def _alive(pid: int) -> bool:
    """Alive unless /proc has no entry or the process is a zombie (dead, only unreaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    state = data[data.rfind(b")") + 2: data.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> float | None:
    """Seconds until every pid is gone (polled every 0.5 ms), or None at the timeout."""
    left = list(pids)
    t0 = time.perf_counter()
    end = t0 + timeout
    while time.perf_counter() < end:
        left = [p for p in left if _alive(p)]
        if not left:
            return time.perf_counter() - t0
        time.sleep(0.0005)
    return None


def floor_cmd(ctx: Ctx, program: list[str], ws: Path, name: str
              ) -> tuple[list[str], dict[str, str], Launch]:
    """The firejail floor: exactly the session's argv, env and child-side launch (the drop
    to the agent user, the TIOCSTI filter), other program."""
    from sandbox.jail.firejail import Agent, JailSpec

    agent = None
    if ctx.agent_uid is not None and ctx.agent_gid is not None:
        import pwd

        agent = Agent(ctx.agent_uid, ctx.agent_gid, pwd.getpwuid(ctx.agent_uid).pw_name)
    spec = JailSpec(
        session_id=name, workdir=ws, state_dir=ctx.state_dir, agent=agent,
        host_home=Path(os.environ.get("HOME") or Path.home()),
    )
    profile = load_profile("default")
    return (firejail.build_argv(profile, spec, program),
            firejail.build_env(profile, spec, dict(os.environ)), firejail.launcher(spec))


def time_until_first_byte(argv: list[str], env: dict[str, str] | None, cwd: Path | str,
                          timeout: float = 30.0, preexec: Launch | None = None
                          ) -> tuple[float, float]:
    """(seconds to the first stdout byte, seconds to exit) of one run of `argv`."""
    t0 = time.perf_counter()
    # The session's own spawn (`jail.spawn`: the compiled launcher where there is one).
    kw: dict[str, Any] = dict(cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL)
    proc = (spawn.popen(argv, preexec, env=env or {}, **kw) if preexec is not None
            else subprocess.Popen(argv, env=env, **kw))
    try:
        assert proc.stdout is not None
        proc.stdout.read(1)
        first = time.perf_counter() - t0
        proc.stdout.read()
        proc.wait(timeout=timeout)
        return first, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
