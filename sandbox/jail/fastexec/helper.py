"""The exec helper's supervisor side: the one `firejail --join` at session start that runs
the in-jail helper (`injail.py`, sent over the socket it inherits), its health, and each
command's start, vouched for by the kernel before the command may exec."""

from __future__ import annotations

import array
import contextlib
import fcntl
import functools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from ... import fdwait
from .. import launch, spawn
from ..firejail import image_env_flags
from . import build
from .kernel import SO_PASSPIDFD, PidInfo, fd_owner, pidfd_from, pidfd_info, proc_state
from .proc import FastProc, readable

if TYPE_CHECKING:
    from ..session_view import JailSession


log = logging.getLogger("sandbox")
START_S = 2.0  # a command's start byte; a helper slower than this is treated as stuck

# The Python helper's boot (a host without a compiler): one `python3 -c` that reads the
# helper's source from the socket on fd 0 and runs it.
BOOT = ("import os\n"
        "def r(n):\n"
        " d=b''\n"
        " while len(d)<n:\n"
        "  c=os.read(0,n-len(d))\n"
        "  if not c:raise SystemExit(1)\n"
        "  d+=c\n"
        " return d\n"
        "exec(compile(r(int.from_bytes(r(4),'big')),'sandbox-exec-helper','exec'))\n")
MFD_EXEC = 0x10  # Linux 6.3: exec wanted, whatever vm.memfd_noexec defaults to


class ExecRequest(Protocol):
    """What the helper needs of one exec (an `execute.Exec` is one)."""

    argv: list[str]
    env: dict[str, str]
    join_cwd: str  # in an image: where it starts; "" for the workspace
    started: float
    t0: float


@functools.cache
def _python_source() -> bytes:
    return resources.files("sandbox.jail.fastexec").joinpath("injail.py").read_bytes()


def _payload() -> tuple[bytes, str]:
    """What the join runs: the compiled helper, else the Python one ("c" or "python")."""
    compiled, _why = build.binary()
    return (compiled, "c") if compiled is not None else (_python_source(), "python")


_memfds: dict[bytes, int] = {}


def _sealed(binary: bytes) -> int:
    """A memfd holding `binary`, sealed (nobody, the agent through a /proc link included,
    can change it), made once per process and shared by every session's join: it is the
    join's stdin, and `/proc/self/fd/0` is what the join execs, so no path holds it."""
    fd = _memfds.get(binary)
    if fd is None:
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:
            fd = os.memfd_create("sandbox-exec", flags | MFD_EXEC)
        except OSError:  # a kernel before 6.3: no such flag, and exec is the default
            fd = os.memfd_create("sandbox-exec", flags)
        view = memoryview(binary)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        _memfds[binary] = fd
    return fd


def _strings(items: list[bytes]) -> bytes:
    """NUL-terminated strings, as the helper reads them."""
    if any(b"\0" in item for item in items):
        raise ValueError("embedded null byte")  # as subprocess says on the joined path
    return b"".join(item + b"\0" for item in items)


def request_body(argv: list[str], env: dict[str, str], cwd: str) -> bytes:
    """argc and envc (4 bytes each, little endian), then cwd, argv, "key=value" env."""
    return (len(argv).to_bytes(4, "little") + len(env).to_bytes(4, "little")
            + _strings([os.fsencode(cwd), *map(os.fsencode, argv),
                        *(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items())]))


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data



@dataclass(frozen=True)
class NoStart:
    """Why a command did not start the fast way. `why` "": the helper is well and only
    could not fork (this one exec joins); `alert`: the tamper kind, or None to take it
    from the helper's health (dead or stopped), else start_unconfirmed."""

    why: str
    alert: str | None = None


class Helper:
    """One session's exec helper: the join that runs it, its socket, its health."""

    def __init__(self, session: JailSession, binary_at: str = "", shell: str = "") -> None:
        """`binary_at`: where the compiled helper is bound in the jail (an image, whose
        python3 is its own or none); else it runs from a memfd (see `_sealed`). `shell`:
        the agent's login shell in the jail, which runs a builtin or a #!-less script (as
        the joined path does: firejail starts every program through it)."""
        self.session = session
        self.state = "starting"  # -> ready -> off
        self.kind = ""  # "c" (sandbox-exec.c) or "python" (injail.py, no compiler here)
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
        # How the join starts it: the compiled helper where an image binds it, or from a
        # sealed memfd on the join's stdin (the socket is then its stdout); else python3
        # is sent the Python helper.
        payload, self.kind = (b"", "c") if binary_at else _payload()
        stdin, stdout = theirs.fileno(), subprocess.DEVNULL
        shell = shell or "-"
        if binary_at:
            program = [binary_at, "0", shell]
        elif self.kind == "c":
            program, stdin, stdout = (["/proc/self/fd/0", "1", shell], _sealed(payload),
                                      theirs.fileno())
            payload = b""
        else:
            program = [launch.tool("python3"), "-I", "-S", "-c", BOOT, shell]
        # An image's loader variables, as every join gets them (`Exec.popen`).
        argv = [launch.tool("firejail"), "--quiet", *image_env_flags(session.spec()),
                session.join_flag(), "--", *program]
        # As `Exec.popen`: the monitor is told a join is coming, so it sees the helper.
        procs = session.hooks.procs
        if procs is not None:
            procs.joining(1)
        proc = None
        try:
            proc = spawn.popen(
                argv, session.launcher(), env=env, cwd=str(session.workdir), stdin=stdin,
                stdout=stdout, stderr=subprocess.PIPE)
        finally:
            theirs.close()
            if procs is not None:
                procs.joining(-1, proc.pid if proc is not None else None)
        assert proc is not None
        self.join: subprocess.Popen[bytes] = proc
        # Queued in the socket (a few KiB); the helper reads it when it runs.
        self.ctl.sendall((_frame(payload) if payload else b"") + _frame(_strings(
            [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()])))

    # -- health -----------------------------------------------------------------------

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the helper said hello and the kernel vouches for it (waits up to
        `timeout` for the hello)."""
        if self.state != "starting":
            return self.state == "ready"
        with self._lock:
            if self.state != "starting":
                return self.state == "ready"
            if not fdwait.ready(self.ctl.fileno(), fdwait.READ, timeout):
                if self.join.poll() is not None:
                    self._off_locked(f"the helper's join exited ({self.join.returncode}): "
                                     + self._stderr(), alert=None)
                return False
            try:
                msg, anc, _f, _a = self.ctl.recvmsg(1, socket.CMSG_SPACE(4))
            except OSError as e:
                self._off_locked(f"the helper's socket failed: {e}", alert=None)
                return False
            pidfd = pidfd_from(anc)
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
            if self.uid != 0 and fd_owner(self.pid) != 0:  # non-dumpable: /proc/PID is root's
                self._off_locked("the helper could not make itself non-dumpable (the agent "
                                 "could take its socket)", alert=None)
                return False
            self.state = "ready"
            return True

    def _stderr(self) -> str:
        err = self.join.stderr
        if err is None or self.join.poll() is None:
            return ""
        from ...textsafe import visible

        return visible(err.read(2000).decode(errors="replace").strip())

    def health(self) -> tuple[str, str] | None:
        """(tamper kind, why) when the helper is dead or stopped."""
        state = proc_state(self._stat_fd)
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
        body = request_body(ex.argv, ex.env, ex.join_cwd or self.session.spec().inside_workdir)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mine.setsockopt(socket.SOL_SOCKET, SO_PASSPIDFD, 1)
        give = [theirs.fileno(), in_r, out_w, err_w]
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
        if isinstance(started, NoStart):
            mine.close()
            for fd in fds:
                os.close(fd)
            if started.why:
                bad = self.health() if started.alert is None else None
                self.off(started.why, started.alert or (bad[0] if bad else
                                                        "fastexec.start_unconfirmed"),
                         {"argv": ex.argv[:20]})
            return None
        pidfd, info = started
        return FastProc(self, info.pid, pidfd, mine, *fds)

    async def _started(self, mine: socket.socket) -> tuple[int, PidInfo] | NoStart:
        """The command's pidfd, vouched for by the kernel; else why not. Awaited, not
        selected: the loop runs other sandboxes' execs meanwhile."""
        if not await readable(mine, START_S):
            return NoStart(f"no start from the exec helper within {START_S}s "
                           "(stopped or stuck)")
        try:
            msg, anc, _f, _a = mine.recvmsg(1, socket.CMSG_SPACE(4))
        except OSError as e:
            return NoStart(f"the command's socket failed: {e}")
        pidfd = pidfd_from(anc)
        if not msg:  # EOF: the fork failed (nproc), or the helper died
            if pidfd is not None:
                os.close(pidfd)
            bad = self.health()
            return NoStart(bad[1] if bad else "")
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
            # The kernel names another process (or none): never a matter of health.
            return NoStart("the command's start is not the kernel's: "
                           + (f"pid {info.pid}, parent {info.ppid} (helper {self.pid}), "
                              f"uid {info.ruid}, cgroup {info.cgroupid}" if info
                              else "no pidfd"), "fastexec.start_unconfirmed")
        assert pidfd is not None and info is not None
        try:
            mine.send(b"G")  # vouched for: now it may exec
        except OSError as e:
            os.close(pidfd)
            return NoStart(f"the command's socket failed: {e}")
        return pidfd, info

