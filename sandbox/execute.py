"""`exec`: a fresh process inside a running session's jail, argv in, streams apart.

The process joins the live jail (`firejail --join`: its mount, PID, network, IPC and UTS
namespaces, its seccomp filters, no capabilities, no-new-privs) through the same
child-side launch as the jail itself (cgroup, TIOCSTI filter, drop to the agent user),
so it runs under the session's limits and network. Its exit status is what the
supervisor's own `waitpid` of the join says: nothing inside the jail can forge it (the
join process lives in the host's PID namespace, out of the agent's sight).

The first slice of the framework door (issue 13): argv or a shell string, stdin fed in
full, stdout and stderr apart and capped, exit 128+N for signal N, a timeout that kills
the whole tree and raises `CommandTimeout` carrying the partial output. Every exec is
text-checked by the guard first and recorded as a command (`source = "exec"`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import threading
import time
from typing import IO, TYPE_CHECKING

import psutil

from . import launch
from .errors import CommandTimeout, SessionClosed
from .result import ExecResult
from .shell import Capture

if TYPE_CHECKING:
    from .session import Session

MAX_OUTPUT = 10 << 20  # per stream, head and tail kept


class ExecTimeout(CommandTimeout):
    """An exec ran past its timeout; its whole process tree was killed. `result` holds
    the output it produced until then."""

    def __init__(self, message: str, result: ExecResult) -> None:
        super().__init__(message)
        self.result = result


def _argv(cmd: list[str] | str, cwd: str | None, workdir: str) -> list[str]:
    argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    if not argv:
        raise ValueError("exec: an empty command")
    if cwd is not None:
        where = cwd if os.path.isabs(cwd) else os.path.join(workdir, cwd)
        argv = ["/usr/bin/env", "-C", where, "--", *argv]  # inside: the jail's own view
    return argv


def _check_user(session: Session, user: str | None) -> None:
    """Only the sandbox's own agent user exists in it; never root."""
    if user is None:
        return
    placement = session.placement
    agent = placement.agent.name if placement and placement.agent else None
    own = agent or session.env().get("USER")
    if user != own:
        raise PermissionError(
            f"exec as {user!r}: only the sandbox's agent user ({own}) runs in it"
            + ("; root never does" if user in ("root", "0") else ""))


def _pump(stream: IO[bytes], cap: Capture) -> None:
    with contextlib.suppress(OSError, ValueError):
        while data := stream.read1(65536):  # type: ignore[attr-defined]
            cap.add(data)


def _feed(stream: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # the program may not read it all
        stream.write(data)
    with contextlib.suppress(OSError, ValueError):
        stream.close()


def _session_members(sid: int) -> list[int]:
    """Host pids whose session is `sid` (the join process leads one: `Launch` calls
    setsid), detached background jobs included, which re-parent to the jail's init."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            out.append(int(entry.name))
    return out


def _kill_tree(pid: int) -> None:
    """The join process and everything it started, wherever it re-parented (bounded)."""
    for _ in range(5):
        pids = set(_session_members(pid))
        with contextlib.suppress(psutil.Error):
            pids |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, 9)


def run_exec(
    session: Session,
    cmd: list[str] | str,
    *,
    input: str | bytes | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    max_output: int = MAX_OUTPUT,
    user: str | None = None,
) -> ExecResult:
    if session.state != "running" or session.jail_pid is None:
        raise SessionClosed(f"session {session.id} is {session.state}")
    _check_user(session, user)
    argv = _argv(cmd, cwd, str(session.workdir))
    text = cmd if isinstance(cmd, str) else shlex.join(argv)
    blocked = session.hooks.check_command(text)
    if blocked is not None:
        return ExecResult(126, b"", blocked.output.encode(), 0.0, blocked=True,
                          alerts=blocked.alerts)
    full_env = session.env()
    if env:
        full_env.update(env)
        from .jail import check_env

        check_env(full_env)
    data = input.encode() if isinstance(input, str) else (input or b"")
    join = [launch.tool("firejail"), "--quiet", f"--join=sbx-{session.id}", "--", *argv]
    started, t0 = time.time(), time.monotonic()
    proc = subprocess.Popen(
        join, env=full_env, cwd=str(session.workdir), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=session.launcher(),
    )
    out, err = Capture(max_output), Capture(max_output)
    assert proc.stdin and proc.stdout and proc.stderr
    threads = [threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
               threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(proc.pid)
        code = proc.wait()
    for t in threads:
        t.join(timeout=5)
    stdout, cut_out = out.result()
    stderr, cut_err = err.result()
    code = 128 - code if code < 0 else code
    duration = time.monotonic() - t0
    session.record_command(text, stdout + stderr, None if timed_out else code, started,
                           duration, "exec", truncated=cut_out or cut_err,
                           output_bytes=out.total + err.total)
    session.emit("exec.result", {
        "argv": argv, "cwd": cwd, "stdin_bytes": len(data), "returncode": code,
        "timed_out": timed_out, "stdout_bytes": out.total, "stderr_bytes": err.total})
    procs = session.hooks.part("procs")
    if procs is not None:
        procs.settle()  # type: ignore[attr-defined]
    result = ExecResult(code, stdout, stderr, duration, timed_out, cut_out or cut_err,
                        alerts=session.hooks.drain_alerts())
    if code == 126 and not isinstance(cmd, str) and b"Permission denied" in stderr:
        raise PermissionError(f"{argv[0]!r} in the sandbox is not executable: "
                              f"{result.stderr.strip()[-200:]}")
    if timed_out:
        raise ExecTimeout(f"{text!r} timed out after {timeout}s", result)
    return result


# -- files, as the agent user inside the jail's own view (hidden paths stay hidden) ------

_ERRORS: tuple[tuple[str, type[OSError]], ...] = (
    ("No such file or directory", FileNotFoundError),
    ("Permission denied", PermissionError),
    ("Read-only file system", PermissionError),
    ("Is a directory", IsADirectoryError),
    ("Not a directory", NotADirectoryError),
)


def _raise_for(path: str, r: ExecResult, what: str) -> None:
    for needle, exc in _ERRORS:
        if needle in r.stderr:
            raise exc(f"{what} {path!r} in the sandbox: {needle}")
    raise OSError(f"{what} {path!r} in the sandbox failed (exit {r.returncode}): "
                  f"{r.stderr.strip()[-300:]}")


def read_file(session: Session, path: str, *, max_bytes: int = MAX_OUTPUT) -> bytes:
    """The file's bytes as the agent sees them; OSError subclasses name the path."""
    r = run_exec(session, ["/bin/cat", "--", path], max_output=max_bytes + 1)
    if r.returncode != 0:
        _raise_for(path, r, "reading")
    if r.truncated or len(r.stdout_bytes) > max_bytes:
        raise OSError(f"reading {path!r} in the sandbox: larger than {max_bytes} bytes "
                      "(pass a larger max_bytes)")
    _file_event(session, "file.read", path, r.stdout_bytes)
    return r.stdout_bytes


def write_file(session: Session, path: str, data: str | bytes) -> None:
    """Write (create or replace) a file as the agent, creating parent directories."""
    raw = data.encode() if isinstance(data, str) else data
    r = run_exec(session, ["/bin/sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && '
                           'cat > "$1"', "sh", path], input=raw)
    if r.returncode != 0:
        _raise_for(path, r, "writing")
    _file_event(session, "file.write", path, raw)


def _file_event(session: Session, kind: str, path: str, data: bytes) -> None:
    import hashlib

    session.emit(kind, {"path": path, "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
