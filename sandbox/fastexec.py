"""Fast exec: enter the jail once, fork many times (issue 20).

A per-command `firejail --join` re-reads firejail's configuration and re-applies the
jail every time (12-25 ms). Here one join, made when the session starts, runs a small
helper inside the jail (`fastexec_helper.py`) that forks each command: it inherits
everything the agent's shell has (namespaces, seccomp filters, no capabilities,
no-new-privs, cgroup, agent uid, rlimits, the TIOCSTI filter), so nothing is re-applied
per command and nothing can be forgotten. The supervisor reaches it only over the socket
that join inherited (its stdin), never over a path in the jail.

The helper shares the agent's uid, so its word is never the result:

- the command hands the supervisor its own pidfd before it execs (a byte on a socket
  made for it; the kernel attaches the sender's pidfd, SCM_PIDFD), and the kernel says
  whose child it is, whose uid and which cgroup (PIDFD_GET_INFO);
- its exit status is the kernel's (PIDFD_INFO_EXIT, once it is reaped), compared with the
  helper's claim: a claim that differs, a start the kernel does not confirm, or a helper
  that will not reap is a tamper alert, and the kernel's status is the result.

A helper that is dead, stopped, or not what the supervisor started is an alert and the
session falls back to the joined path for good (an `exec.fast_off` event says why);
where fast exec cannot work at all (an image, a kernel without pidfd exit info) that is
recorded once as info. The profile's `[exec] fast` turns it on.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import functools
import logging
import marshal
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import launch
from .child import AsyncChild, Sink

if TYPE_CHECKING:
    from .parts import PartSession


class ExecRequest(Protocol):
    """What the helper needs of one exec (an `execute.Exec` is one)."""

    argv: list[str]
    env: dict[str, str]
    join_cwd: str  # in an image: where it starts; "" for the workspace
    started: float
    t0: float

log = logging.getLogger("sandbox")

SO_PASSPIDFD, SCM_PIDFD = 76, 4  # Linux 6.5
PIDFD_GET_INFO = 0xC040FF0B  # _IOWR(0xFF, 11, struct pidfd_info): Linux 6.13
INFO_PID, INFO_CREDS, INFO_CGROUPID, INFO_EXIT = 1, 2, 4, 8  # PIDFD_INFO_EXIT: Linux 6.15
_INFO = struct.Struct("=QQIIIIIIIIIIIiII")  # struct pidfd_info, 64 bytes
START_S = 2.0  # a command's start byte; a helper slower than this is treated as stuck
REAP_S = 2.0  # from a command's exit to the helper's reap; then it is killed, init reaps
CONFIRM_S = 10.0  # after which a status the kernel never gave is reported as a kill
CLAIM_S = 0.5  # the helper's claim follows its reap at once; a missing one is not waited for

# One `python3 -c`: read the helper's source from the socket on fd 0, run it.
BOOT = ("import os\n"
        "def r(n):\n"
        " d=b''\n"
        " while len(d)<n:\n"
        "  c=os.read(0,n-len(d))\n"
        "  if not c:raise SystemExit(1)\n"
        "  d+=c\n"
        " return d\n"
        "exec(compile(r(int.from_bytes(r(4),'big')),'sandbox-exec-helper','exec'))\n")


@dataclass(frozen=True)
class PidInfo:
    """What the kernel says about a pidfd's process (PIDFD_GET_INFO)."""

    mask: int
    cgroupid: int
    pid: int
    ppid: int
    ruid: int
    exit_code: int  # a wait status, valid when mask has INFO_EXIT

    @property
    def exited(self) -> bool:
        return bool(self.mask & INFO_EXIT)


def pidfd_info(pidfd: int) -> PidInfo | None:
    """The kernel's view of `pidfd`'s process; None once it is reaped and no exit info is
    held (it should always be)."""
    buf = bytearray(_INFO.size)
    struct.pack_into("=Q", buf, 0, INFO_PID | INFO_CREDS | INFO_CGROUPID | INFO_EXIT)
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
        raise
    f = _INFO.unpack(buf)
    return PidInfo(mask=f[0], cgroupid=f[1], pid=f[2], ppid=f[4], ruid=f[5], exit_code=f[13])


@functools.cache
def unsupported() -> str | None:
    """Why this kernel cannot vouch for a fast exec's status, or None."""
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, SO_PASSPIDFD, 1)
    except OSError as e:
        return f"no SO_PASSPIDFD (Linux 6.5): {e.strerror}"
    proc = subprocess.Popen(["/bin/true"])
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError as e:
        proc.wait()
        return f"no pidfd: {e.strerror}"
    try:
        proc.wait()
        info = pidfd_info(pidfd)
    except OSError as e:
        return f"no PIDFD_GET_INFO (Linux 6.13): {e.strerror}"
    finally:
        os.close(pidfd)
    if info is None or not info.exited:
        return "no PIDFD_INFO_EXIT (Linux 6.15): the kernel cannot give a reaped child's status"
    return None


@functools.cache
def _source() -> bytes:
    return resources.files("sandbox").joinpath("fastexec_helper.py").read_bytes()


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _state(stat_fd: int) -> str:
    """The state letter (R, S, T, Z, ...) of the process whose /proc/PID/stat `stat_fd`
    is open on, "" when it is gone. One pread per exec: an open fd reads the live file
    again, without the path walk (which was most of this check's cost)."""
    try:
        stat = os.pread(stat_fd, 512, 0)
    except OSError:
        return ""
    return stat[stat.rfind(b")") + 2:][:1].decode()


def _pidfd_from(anc: list[tuple[int, int, bytes]]) -> int | None:
    """The pidfd the kernel attached (SCM_PIDFD); any other fds sent along are closed."""
    pidfd = None
    for level, kind, data in anc:
        if level != socket.SOL_SOCKET or kind not in (SCM_PIDFD, socket.SCM_RIGHTS):
            continue
        fds = array.array("i", data[:len(data) - len(data) % 4])
        for fd in fds:
            if kind == SCM_PIDFD and pidfd is None:
                pidfd = fd
            else:
                os.close(fd)
    return pidfd


_FORGED = "the command's start is not the kernel's: "


class Helper:
    """One session's exec helper: the join that runs it, its socket, its health."""

    def __init__(self, session: PartSession) -> None:
        self.session = session
        self.state = "starting"  # -> ready -> off
        self.why_off = ""
        self.pid = 0  # the helper's host pid, from the kernel (its hello's pidfd)
        self.pidfd = -1
        self._stat_fd = -1
        self.cgroupid = 0
        agent = session.spec().agent
        self.uid = agent.uid if agent is not None else os.getuid()
        self.used = {"fast": 0, "join": 0}  # tests and the bench read these
        self._lock = threading.Lock()
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.setsockopt(socket.SOL_SOCKET, SO_PASSPIDFD, 1)
        env = session.env()
        argv = [launch.tool("firejail"), "--quiet", f"--join=sbx-{session.id}", "--",
                launch.tool("python3"), "-I", "-S", "-c", BOOT]
        # As `Exec.popen`: the monitor is told a join is coming, so it sees the helper.
        procs = session.hooks.procs
        if procs is not None:
            procs.joining(1)
        proc = None
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=str(session.workdir), stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=session.launcher())
        finally:
            theirs.close()
            if procs is not None:
                procs.joining(-1, proc.pid if proc is not None else None)
        assert proc is not None
        self.join: subprocess.Popen[bytes] = proc
        # Queued in the socket now; the helper reads it when it runs (nothing waits here).
        self.ctl.sendall(_frame(_source()) + _frame(marshal.dumps(
            [(k.encode(), v.encode()) for k, v in env.items()])))

    # -- health -----------------------------------------------------------------------

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the helper said hello and the kernel vouches for it (waits up to
        `timeout` for the hello)."""
        if self.state != "starting":
            return self.state == "ready"
        with self._lock:
            if self.state != "starting":
                return self.state == "ready"
            if not select.select([self.ctl], [], [], timeout)[0]:
                if self.join.poll() is not None:
                    self._off_locked(f"the helper's join exited ({self.join.returncode}): "
                                     + self._stderr(), alert=None)
                return False
            try:
                msg, anc, _f, _a = self.ctl.recvmsg(1, socket.CMSG_SPACE(4))
            except OSError as e:
                self._off_locked(f"the helper's socket failed: {e}", alert=None)
                return False
            pidfd = _pidfd_from(anc)
            info = pidfd_info(pidfd) if pidfd is not None else None
            if msg != b"H" or pidfd is None or info is None or info.ruid != self.uid:
                if pidfd is not None:
                    os.close(pidfd)
                self._off_locked(f"the helper did not start: {self._stderr()}"
                                 if not msg else "the helper's hello is not confirmed",
                                 alert=None if not msg else "fastexec.hello_forged")
                return False
            self.pidfd, self.pid, self.cgroupid = pidfd, info.pid, info.cgroupid
            try:  # opened while the pidfd pins it: this is the helper's /proc entry
                self._stat_fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                self._off_locked(f"the helper's /proc entry cannot be read: {e}", alert=None)
                return False
            if self.uid != 0 and _owner(self.pid) != 0:  # non-dumpable: /proc/PID is root's
                self._off_locked("the helper could not make itself non-dumpable (the agent "
                                 "could take its socket)", alert=None)
                return False
            self.state = "ready"
            return True

    def _stderr(self) -> str:
        err = self.join.stderr
        if err is None or self.join.poll() is None:
            return ""
        from .textsafe import visible

        return visible(err.read(2000).decode(errors="replace").strip())

    def health(self) -> tuple[str, str] | None:
        """(tamper kind, why) when the helper is dead or stopped."""
        state = _state(self._stat_fd)
        if state in ("", "Z", "X") or self.join.poll() is not None:
            return "fastexec.helper_dead", "the exec helper is gone (killed in the jail?)"
        if state in ("T", "t"):
            return "fastexec.helper_stopped", "the exec helper is stopped (SIGSTOP in the jail?)"
        return None

    def off(self, why: str, alert: str | None, detail: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._off_locked(why, alert, detail)

    def _off_locked(self, why: str, alert: str | None,
                    detail: dict[str, Any] | None = None) -> None:
        """Never again for this session: the joined path from here on, and why."""
        if self.state == "off":
            return
        self.state, self.why_off = "off", why
        self.kill()
        if alert is not None:
            self.session.hooks.tamper(alert, {"reason": why, **(detail or {})})
        self.session.emit("exec.fast_off", {"reason": why, "alert": alert},
                          severity="warning" if alert else "info")

    def kill(self) -> None:
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def stop(self) -> None:
        """The session ends: the jail is gone (and the helper with it), or going."""
        self.state = "off"
        self.kill()
        self.ctl.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.join.wait(5)
        if self.join.stderr is not None:
            self.join.stderr.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        if self._stat_fd >= 0:
            os.close(self._stat_fd)
            self._stat_fd = -1

    # -- one command --------------------------------------------------------------------

    async def launch(self, ex: ExecRequest) -> FastProc | None:
        """Start `ex` through the helper; None: use the joined path (recorded why, if
        the helper is broken)."""
        if not self.ready():
            self.used["join"] += 1
            return None
        bad = self.health()
        if bad is not None:
            self.off(bad[1], bad[0])
            self.used["join"] += 1
            return None
        proc = await self._request(ex)
        self.used["fast" if proc is not None else "join"] += 1
        return proc

    async def _request(self, ex: ExecRequest) -> FastProc | None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setsockopt(socket.SOL_SOCKET, SO_PASSPIDFD, 1)
        give = [theirs.fileno(), in_r, out_w, err_w]
        cwd = ex.join_cwd or self.session.spec().inside_workdir
        body = marshal.dumps(([os.fsencode(a) for a in ex.argv],
                              [(os.fsencode(k), os.fsencode(v)) for k, v in ex.env.items()],
                              os.fsencode(cwd)))
        ex.started, ex.t0 = time.time(), time.monotonic()
        try:
            with self._lock:
                self.ctl.settimeout(START_S)
                try:
                    self.ctl.sendmsg([len(body).to_bytes(4, "big")],
                                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", give).tobytes())])
                    self.ctl.sendall(body)
                finally:
                    self.ctl.settimeout(None)
        except OSError as e:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            mine.close()
            theirs.close()
            self.off(f"the exec helper does not take requests: {e}", "fastexec.helper_dead")
            return None
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        theirs.close()
        fds = (in_w, out_r, err_r)
        try:
            started = await self._started(mine)
        except BaseException:  # cancelled: the unconfirmed command gets no go (EOF: 127)
            mine.close()
            for fd in fds:
                os.close(fd)
            raise
        if isinstance(started, str):
            mine.close()
            for fd in fds:
                os.close(fd)
            if started.startswith(_FORGED):  # the kernel names another process
                self.off(started, "fastexec.start_unconfirmed", {"argv": ex.argv[:20]})
            elif started:  # no helper, or one that stalls
                bad = self.health()
                self.off(started, bad[0] if bad else "fastexec.start_unconfirmed",
                         {"argv": ex.argv[:20]})
            return None
        pidfd, info = started
        return FastProc(self, info.pid, pidfd, mine, *fds)

    async def _started(self, mine: socket.socket) -> tuple[int, PidInfo] | str:
        """The command's pidfd, vouched for by the kernel; else why not ("" when the
        helper is well and only could not fork: this one exec goes the joined way).
        Awaited, not selected: the loop runs other sandboxes' execs meanwhile."""
        if not await _readable(mine, START_S):
            return f"no start from the exec helper within {START_S}s (stopped or stuck)"
        try:
            msg, anc, _f, _a = mine.recvmsg(1, socket.CMSG_SPACE(4))
        except OSError as e:
            return f"the command's socket failed: {e}"
        pidfd = _pidfd_from(anc)
        if not msg:  # EOF: the fork failed (nproc), or the helper died
            if pidfd is not None:
                os.close(pidfd)
            bad = self.health()
            return bad[1] if bad else ""
        info = pidfd_info(pidfd) if pidfd is not None else None
        if info is not None and info.exited:
            info = None  # reaped before its go: not a command the helper started honestly
        ok = (msg == b"S" and info is not None and info.ppid == self.pid
              and info.pid != self.pid and info.ruid == self.uid
              and info.cgroupid == self.cgroupid)
        if not ok:
            if pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            return (_FORGED
                    + (f"pid {info.pid}, parent {info.ppid} (helper {self.pid}), uid "
                       f"{info.ruid}, cgroup {info.cgroupid}" if info else "no pidfd"))
        assert pidfd is not None and info is not None
        try:
            mine.send(b"G")  # vouched for: now it may exec
        except OSError as e:
            os.close(pidfd)
            return f"the command's socket failed: {e}"
        return pidfd, info


def _owner(pid: int) -> int:
    """Whose /proc/PID/fd is: root's when the process is non-dumpable (/proc/PID itself
    keeps the process's uid)."""
    try:
        return os.stat(f"/proc/{pid}/fd").st_uid
    except OSError:
        return -1


class FastProc:
    """A command the helper started, as much of `subprocess.Popen` as `AsyncChild` uses;
    its status is the kernel's."""

    def __init__(self, helper: Helper, pid: int, pidfd: int, sock: socket.socket,
                 stdin: int, stdout: int, stderr: int) -> None:
        self.helper = helper
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock
        self.stdin = open(stdin, "wb", buffering=0)  # noqa: SIM115 - closed by AsyncChild
        self.stdout = open(stdout, "rb", buffering=0)  # noqa: SIM115
        self.stderr = open(stderr, "rb", buffering=0)  # noqa: SIM115
        self.returncode: int | None = None
        self.claim: int | None = None  # the helper's word (a wait status)
        self._status = 0  # the kernel's wait status, once returncode is set
        self._exited_at = 0.0
        self._pushed = False  # the helper was killed so that init reaps

    def poll(self) -> int | None:
        if self.returncode is None:
            info = pidfd_info(self.pidfd)
            if info is not None and info.exited:
                self.returncode = os.waitstatus_to_exitcode(info.exit_code)
                self._status = info.exit_code
        return self.returncode

    def _step(self) -> bool:
        """One look: confirmed yet? Pushes a helper that does not reap (alert)."""
        if self.poll() is not None:
            return True
        now = time.monotonic()
        self._exited_at = self._exited_at or now
        if not self._pushed and now - self._exited_at > REAP_S:
            self._pushed = True
            bad = self.helper.health()
            self.helper.off("the exec helper did not reap an exited command"
                            if bad is None else bad[1],
                            "fastexec.reap_withheld" if bad is None else bad[0],
                            {"pid": self.pid})
        return False

    def _finish(self) -> int:
        """The result once confirmed (or not: then a kill, and an alert)."""
        if self.returncode is None:
            self.helper.session.hooks.tamper("fastexec.status_unconfirmed", {
                "pid": self.pid, "reason": "the kernel never gave this command's status"})
            self.returncode = -signal.SIGKILL
            return self.returncode
        self._read_claim()
        if self.claim is not None and self.claim != self._status:
            self.helper.off("the exec helper's exit status is not the kernel's",
                            "fastexec.status_forged",
                            {"pid": self.pid, "claimed": self.claim, "kernel": self._status})
        return self.returncode

    def _read_claim(self, timeout: float = CLAIM_S) -> None:
        if self.claim is not None:
            return
        if not select.select([self.sock], [], [], timeout)[0]:
            return
        with contextlib.suppress(OSError):
            data = self.sock.recv(5)
            if len(data) == 5 and data[:1] == b"X":
                self.claim = struct.unpack("<i", data[1:])[0]

    def wait(self, timeout: float | None = None) -> int:
        """Block until the kernel confirms the status (the cancel path)."""
        deadline = time.monotonic() + (CONFIRM_S if timeout is None else timeout)
        while not self._step():
            if time.monotonic() > deadline:
                if timeout is not None:
                    raise subprocess.TimeoutExpired(str(self.pid), timeout)
                break
            time.sleep(0.001)
        return self._finish()

    async def confirmed(self) -> int:
        """The status, once the process has exited (its pidfd is readable)."""
        deadline = time.monotonic() + CONFIRM_S
        if not self._step() and self.claim is None:
            # The kernel holds the status once the helper has reaped, and the helper's
            # claim follows its reap: one wake-up on the claim, not a polling loop. Only
            # a hint: a claim sent early (or never) just falls through to the polls.
            await _readable(self.sock, REAP_S)
            self._read_claim(0.0)
        delay = 0.0002
        while not self._step() and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return self._finish()

    def close(self) -> None:
        self.sock.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def kill_tree(self) -> None:
        """The command and everything it started, detached jobs too (its session)."""
        from .child import kill_tree

        kill_tree(self.pid, root=True)


async def _readable(sock: socket.socket, timeout: float) -> bool:
    """Until `sock` has something to read (or EOF), at most `timeout` seconds: whether
    it has."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class FastChild(AsyncChild):
    """`AsyncChild` over a helper-started command: the same pipes and loop readers, the
    exit from the pidfd the kernel handed over, the status from the kernel."""

    def __init__(self, proc: FastProc, on_out: Sink, on_err: Sink) -> None:
        # Not AsyncChild.__init__: that opens a pidfd by pid, and this command may be
        # reaped already; the pidfd it handed over is the one that cannot be mistaken.
        self.proc = cast(subprocess.Popen[bytes], proc)
        self.fast = proc
        self.pid = proc.pid
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._eof = [self._loop.create_future(), self._loop.create_future()]
        self._pidfd = os.dup(proc.pidfd)
        self._loop.add_reader(self._pidfd, self._on_exit)
        self._pending = bytearray()
        self._stdin_close = False
        self._drained = None
        for i, (stream, sink) in enumerate(((proc.stdout, on_out), (proc.stderr, on_err))):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._on_read, fd, sink, self._eof[i])
        os.set_blocking(proc.stdin.fileno(), False)

    async def wait(self, timeout: float | None = None) -> int:
        await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return await self.fast.confirmed()

    def close(self) -> None:
        super().close()
        self.fast.close()
