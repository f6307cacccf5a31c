"""Starting a process of the jail (a join, the image holder, the wrapper's jail): through
the compiled launcher (`fastexec/sandbox-launch.c`) where it can, else with the `Launch`
as a preexec_fn.

Why: a preexec_fn makes subprocess fork the supervisor and run Python in the child. The
supervisor's page tables grow with every live sandbox: with 256 alive a fork and exec
cost ~6 ms of CPU, ~5 of it copying and faulting pages, against ~0.6 ms for the vfork
subprocess makes when nothing runs in the child but its own code. The launcher makes the
same system calls in the same order (`Launch.compiled_options`), so the jail is the
same; tests compare the two (tests/core/test_launch.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

from ..errors import SessionClosed
from ..textsafe import visible
from .launch import Launch, trusted_file


@functools.cache
def launcher() -> str | None:
    """The compiled launcher, if this host has it and it is safe for root to run (a
    root-owned file in root-owned directories); else None."""
    from .fastexec import build

    path = build.launcher()
    if path is None or trusted_file(Path(path)) is not None:
        return None
    return path


def join_flag(jail_pid: int | None, session_id: str) -> str:
    """`--join=PID` for a jail whose first process is this process's child; SessionClosed
    once it has exited (or `jail_pid` is None). By pid, not name: a `--name` made
    firejail read every process's cmdline on the host, to check the name unused at the
    start and to find it at each join (with 256 sandboxes alive ~8 ms of CPU a start,
    ~4 ms a join). A child's pid is not reused before it is reaped, and waitid(WNOWAIT)
    says whether it was."""
    try:
        exited = jail_pid is None or os.waitid(
            os.P_PID, jail_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already: its pid may be another process's
        exited = True
    if exited:
        raise SessionClosed(f"session {session_id}: its jail has ended")
    return f"--join={jail_pid}"


def _env_file(env: dict[str, str]) -> int:
    """The environment as a memfd of "key=value\\0" strings: not argv (any host user can
    read /proc/PID/cmdline), and not the launcher's own environment (it runs as root)."""
    fd = os.memfd_create("sandbox-env", os.MFD_CLOEXEC)
    data = b"".join(os.fsencode(k) + b"=" + os.fsencode(v) + b"\0" for k, v in env.items())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def popen(argv: list[str], launch: Launch, *, env: dict[str, str], compiled: bool = True,
          **kw: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(argv, env=env, **kw)` with `launch`'s steps in the child.
    Fails as a preexec_fn does (SubprocessError, the child reaped) if a step fails."""
    opts = launch.compiled_options() if compiled else None
    tool = launcher() if opts is not None else None
    if tool is None or opts is None:
        return subprocess.Popen(argv, env=env, preexec_fn=launch, **kw)
    envfd = _env_file(env)
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            [tool, str(w), str(envfd), *opts, "--", *argv], env={}, pass_fds=(w, envfd),
            start_new_session=launch.setsid, **kw)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
        os.close(envfd)
    with os.fdopen(r, "rb") as fh:  # EOF: the launcher exec'd the program
        err = fh.read(4096)
    if err:
        proc.wait()
        # Paths in it may be an image's (its author's bytes): shown harmlessly.
        raise subprocess.SubprocessError(
            f"the jail's launch failed: {visible(err.decode(errors='replace'))}")
    return proc
