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

The process is driven from an asyncio loop (`child.AsyncChild`: pidfd and non-blocking
pipes, no thread per exec); the sync `Sandbox` runs the same code on a shared loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import posixpath
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

from .. import supervisor
from ..child import AsyncChild, end, kill_tree
from ..errors import CommandTimeout, SessionClosed
from ..jail import fastexec, launch, spawn
from ..jail.firejail import image_env_flags
from ..result import ExecResult
from ..shell import Capture
from ..textsafe import visible
from . import loop
from .exec_options import ExecOptions

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("sandbox")
MAX_OUTPUT = 10 << 20  # per stream, head and tail kept
PIPE_GRACE_S = 5.0  # a background job may keep the pipes open past the exit; not longer


def recorder() -> ThreadPoolExecutor:
    """Recording an exec (a store write, then the monitor's verdicts on its execs)
    blocks: it runs on threads of its own, never queued behind the caller's default
    executor (where 256 sandbox starts held every first exec's record for 29 s in the
    bench). The supervisor's."""
    return supervisor.current().executor("record", 8)


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


# firejail refuses a command line with an argument of MAX_ARG_LEN (PATH_MAX + 32) bytes or
# more, or MAX_ARGS (128) arguments in all (its own four included): "too long arguments".
_FJ_MAX_ARG = 4000
_FJ_MAX_ARGS = 100
_MAX_ARG_STRLEN = 131072  # the kernel's MAX_ARG_STRLEN: execve refuses one argument this long
# Past those limits the argv travels on stdin, ahead of the caller's input: a shell in
# the jail reads exactly its length (head -c never reads past it), then execs it.
_CARRY = 'a=$(/usr/bin/head -c "$1") && eval "set -- $a" && exec "$@"'


def _carried(argv: list[str]) -> tuple[list[str], bytes]:
    """The command line firejail is given, and what goes on stdin before the input."""
    if len(argv) <= _FJ_MAX_ARGS and all(len(os.fsencode(a)) < _FJ_MAX_ARG for a in argv):
        return argv, b""
    header = os.fsencode(shlex.join(argv))
    return ["/bin/sh", "-c", _CARRY, "sh", str(len(header))], header


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


@dataclass
class Exec:
    """One exec from its checks to its record: everything but driving the process."""

    session: Session
    cmd: list[str] | str
    argv: list[str]
    text: str
    env: dict[str, str]
    data: bytes
    cwd: str | None
    timeout: float | None
    out: Capture
    err: Capture
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)
    preamble: bytes = b""  # a long argv, on stdin ahead of the input (see `_carried`)
    # False for the file door's own cat/tar: the bytes are the file's, and its file.*
    # event holds their size and sha256 (a 5 MB read cost ~0.6 s of hashing otherwise).
    record_output: bool = True
    # This exec's alerts (`Hooks.open_alerts`): opened before its guard check, closed
    # by `finish`, or by `popen` if the process never starts.
    alerts: list[dict[str, Any]] = field(default_factory=list)
    join_cwd: str = ""  # in an image: where the join starts (firejail --private-cwd)

    def popen(self, stdin: bool = True) -> subprocess.Popen[bytes]:
        argv, self.preamble = _carried(self.argv)
        # firejail takes no option after --join: the cwd goes first.
        cwd = [f"--private-cwd={self.join_cwd}"] if self.join_cwd else []
        cwd += image_env_flags(self.session.spec())  # an image's LD_* (see jail.py)
        self.started, self.t0 = time.time(), time.monotonic()
        # The exec monitor must see what the join runs (process rules, the record): it
        # is our child, not the jail's, so tell the monitor it is coming.
        procs = self.session.hooks.procs
        if procs is not None:
            procs.joining(1)
        proc = None
        try:
            join = [launch.tool("firejail"), "--quiet", *cwd, self.session.join_flag(),
                    "--", *argv]
            proc = spawn.popen(
                join, self.session.launcher(), env=self.env, cwd=str(self.session.workdir),
                stdin=subprocess.PIPE if stdin or self.preamble else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            self.session.hooks.close_alerts(self.alerts)
            raise
        finally:
            if procs is not None:
                procs.joining(-1, proc.pid if proc is not None else None)
        return proc

    def finish(self, status: int | None, timed_out: bool) -> ExecResult:
        """Record the exec and build its result (blocking: a store write, and the
        monitor's verdicts on its execs)."""
        session = self.session
        code = -1 if status is None else (128 - status if status < 0 else status)
        stdout, cut_out = self.out.result()
        stderr, cut_err = self.err.result()
        duration = time.monotonic() - self.t0
        recorded, cut = self._recorded(stdout, stderr)
        # The command row and its exec.result: one write.
        session.record_command(
            self.text, recorded, None if timed_out else code, self.started, duration,
            "exec", truncated=cut_out or cut_err or cut, timed_out=timed_out,
            output_bytes=self.out.total + self.err.total, then=("exec.result", {
                "argv": self.argv, "cwd": self.cwd, "stdin_bytes": len(self.data),
                "returncode": code, "timed_out": timed_out, "stdout_bytes": self.out.total,
                "stderr_bytes": self.err.total,
                # the command row's output is stdout then stderr: this is where they meet
                "stdout_recorded": None if cut else len(stdout)}))
        procs = session.hooks.procs
        if procs is not None:
            procs.settle()
        return ExecResult(code, stdout, stderr, duration, timed_out, cut_out or cut_err,
                          alerts=session.hooks.close_alerts(self.alerts))

    def _recorded(self, stdout: bytes, stderr: bytes) -> tuple[bytes, bool]:
        """What the record keeps: the profile's max_output_bytes (head and tail), not
        the caller's max_output; for file transfers only a pointer to their event."""
        if not self.record_output:
            n = len(stdout) + len(stderr)
            return (f"[{n} bytes of file data: see the file.* event (size, sha256)]\n"
                    .encode() + stderr[-4096:]), False
        cap = self.session.profile.recording.max_output_bytes
        if not cap or len(stdout) + len(stderr) <= cap:
            return stdout + stderr, False
        keep = Capture(cap)
        keep.add(stdout)
        keep.add(stderr)
        return keep.result()

    def check(self, result: ExecResult) -> ExecResult:
        """Raise what the caller asked to see raised."""
        if (result.returncode == 126 and not isinstance(self.cmd, str)
                and b"Permission denied" in result.stderr_bytes):
            raise PermissionError(f"{self.argv[0]!r} in the sandbox is not executable: "
                                  f"{visible(result.stderr.strip()[-200:])}")
        if result.timed_out:
            raise ExecTimeout(f"{self.text!r} timed out after {self.timeout}s", result)
        return result


def prepare(session: Session, cmd: list[str] | str, *, record_output: bool = True,
            **options: Unpack[ExecOptions]) -> Exec | ExecResult:
    """The checks before any process: state, user, guard on the text, the environment.
    An ExecResult means the guard blocked it (recorded already)."""
    input, cwd, env = options.get("input"), options.get("cwd"), options.get("env")
    timeout, user = options.get("timeout"), options.get("user")
    max_output = options.get("max_output", MAX_OUTPUT)
    if session.state != "running" or session.jail_pid is None:
        raise SessionClosed(f"session {session.id} is {session.state}")
    _check_user(session, user)
    inside = session.spec().inside_workdir
    join_cwd = ""
    image = session.spec().image
    if image is not None and not (cwd is not None and session.image.has_env):
        # In an image the caller's cwd (a host path) does not exist inside: firejail
        # starts the join in the workspace (or `cwd`, in an image without /usr/bin/env).
        join_cwd = posixpath.normpath(posixpath.join(inside, cwd or "."))
        argv = _argv(cmd, None, inside)
    else:
        argv = _argv(cmd, cwd, inside)
        join_cwd = image.workdir if image is not None else ""
    if any(len(os.fsencode(a)) >= _MAX_ARG_STRLEN for a in argv):
        raise ValueError(f"exec: an argument of {_MAX_ARG_STRLEN} bytes or more cannot be "
                         "run (the kernel's limit for one argument): write it to a file "
                         "(write_file) or pass it as input")
    text = cmd if isinstance(cmd, str) else shlex.join(argv)
    full_env = session.env()
    if env:
        full_env.update(env)
        from ..jail.firejail import check_env

        check_env(full_env)
    data = input.encode() if isinstance(input, str) else (input or b"")
    box = session.hooks.open_alerts()
    try:
        blocked = session.hooks.check_command(text)
    except BaseException:
        session.hooks.close_alerts(box)
        raise
    if blocked is not None:
        session.hooks.close_alerts(box)
        return ExecResult(126, b"", blocked.output.encode(), 0.0, blocked=True,
                          alerts=blocked.alerts)
    return Exec(session, cmd, argv, text, full_env, data, cwd, timeout,
                Capture(max_output), Capture(max_output), record_output=record_output,
                alerts=box, join_cwd=join_cwd)


async def start_child(ex: Exec, on_out: Callable[[bytes], None],
                      on_err: Callable[[bytes], None]) -> AsyncChild:
    """The process: forked by the session's exec helper inside the jail (`fastexec`),
    else a `firejail --join` of its own."""
    part = ex.session.hooks.fast
    fast = await part.child(ex, on_out, on_err) if part is not None else None
    return fast if fast is not None else AsyncChild(ex.popen(), on_out, on_err)


def kill_child(child: AsyncChild) -> None:
    """Kill what `child` runs. A join process is left to reap it (`kill_tree`); a
    helper-forked command is the tree's root itself."""
    kill_tree(child.pid, root=isinstance(child, fastexec.FastChild))


async def end_child(child: AsyncChild) -> int:
    if isinstance(child, fastexec.FastChild):
        kill_child(child)
    return await end(child)


Ended = tuple[Exec, int | None, bool]  # an exec whose process is done: (it, status, timed out)


async def exec_async(session: Session, cmd: list[str] | str, *, record_output: bool = True,
                     **options: Unpack[ExecOptions]) -> ExecResult:
    """`Sandbox.exec` on the running loop (see `AsyncSandbox.exec`)."""
    got = await run_async(session, cmd, record_output=record_output, **options)
    if isinstance(got, ExecResult):
        return got
    ex, status, timed_out = got
    # Off the loop: the record waits for the monitor's verdicts on what it ran.
    result = await asyncio.get_running_loop().run_in_executor(recorder(), ex.finish, status,
                                                              timed_out)
    return ex.check(result)


def exec_sync(session: Session, cmd: list[str] | str, *, record_output: bool = True,
              meanwhile: Callable[[], object] | None = None,
              **options: Unpack[ExecOptions]) -> ExecResult:
    """`Sandbox.exec`: the process driven on the shared loop, its record written here, in
    the caller's own thread, which waits anyway (two thread hand-offs fewer than the
    recorder's threads: about 0.5 ms an exec). A caller interrupted meanwhile leaves the
    record to the recorder's threads: nothing run goes unrecorded. `meanwhile` runs in
    this thread while the exec does (the file door's sha256)."""
    future = loop.submit(run_async(session, cmd, record_output=record_output, **options))
    try:
        if meanwhile is not None:
            meanwhile()
        got = future.result()
    except BaseException:
        future.add_done_callback(_record_later)
        raise
    if isinstance(got, ExecResult):
        return got
    ex, status, timed_out = got
    return ex.check(ex.finish(status, timed_out))


def _record_later(future: concurrent.futures.Future[ExecResult | Ended]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    got = future.result()
    if not isinstance(got, ExecResult):
        recorder().submit(got[0].finish, got[1], got[2])


async def run_async(session: Session, cmd: list[str] | str, *, record_output: bool = True,
                    **options: Unpack[ExecOptions]) -> ExecResult | Ended:
    """An exec up to its process's end (its record is the caller's: `Exec.finish`), or
    the guard's block."""
    ex = prepare(session, cmd, record_output=record_output, **options)
    if isinstance(ex, ExecResult):
        return ex
    child = await start_child(ex, ex.out.add, ex.err.add)
    timed_out = False
    try:
        child.write(ex.preamble + ex.data)
        child.close_stdin()
        try:
            status: int | None = await child.wait(ex.timeout)
        except TimeoutError:
            timed_out = True
            status = await end_child(child)
        await child.streams_closed(PIPE_GRACE_S)
    except BaseException:  # cancelled: nothing of it may outlive the caller's interest
        kill_child(child)  # the join reaps its child and exits (see `child.end`)
        try:
            status = child.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            kill_tree(child.pid, root=True)
            status = child.proc.wait()
        child.close()
        # Still recorded (the caller's interest ended, not the record's): off the loop,
        # as the finished ones are, since a cancelled caller cannot await it.
        recorder().submit(ex.finish, status, False)
        raise
    child.close()
    return ex, status, timed_out
