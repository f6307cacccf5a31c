"""`Shell`: the jail's bash spawned under pexpect and driven one command line at a time.

This module owns the PTY: spawning (pexpect tuned for speed), start-up (eval the rc file,
wait for the first prompt), raw reads and writes, and the command loop with its timeout
ladder (Ctrl-C, then SIGKILL below bash, then give the shell up). What the bytes mean is
`collect`'s business; whether bash is still the recorded one is `probe`'s; the operator's
pass-through is `relay`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from importlib import resources
from typing import Any

import pexpect

from .. import fdwait
from ..errors import SessionClosed, SetupError
from ..jail.launch import Launch
from . import marker
from .collect import Collect, RawResult
from .marker import FORGED, HOOKS, MISSING, quote_ansi_c
from .probe import Prober
from .ptyjail import PtyJail
from .relay import InteractiveParser, OnCommand, OnTamper, relay

_READ = 65536

log = logging.getLogger("sandbox")


def rc_text() -> str:
    return resources.files("sandbox").joinpath("shell_rc.bash").read_text()


class Shell:
    """A recorded bash in a jail. One command at a time (guarded by a lock)."""

    is_exit_command = staticmethod(marker.is_exit_command)

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        *,
        mode: str = "api",
        max_output: int = 1 << 20,
        launch: Launch | None = None,
        dimensions: tuple[int, int] = (50, 200),
    ) -> None:
        self.nonce = secrets.token_hex(8)
        self._ours = marker.ours_re(self.nonce.encode())
        self.mode = mode
        self.max_output = max_output
        env = dict(env)
        env["__SBX_NONCE"] = self.nonce
        env["__SBX_RC"] = rc_text()
        env["__SBX_MODE"] = mode
        self._lock = threading.Lock()
        self._buf = b""  # bytes read past the last marker we consumed
        self._start_rest = b""  # shell mode: the first prompt, read during start-up
        self.closed = False
        try:
            if mode == "api" and launch is not None:  # see ptyjail: no fork of this process
                self.child: Any = PtyJail(argv, env, cwd, launch, dimensions)
            else:
                self.child = pexpect.spawn(
                    argv[0], argv[1:], env=env, cwd=cwd, echo=False, encoding=None,
                    maxread=_READ, dimensions=dimensions, preexec_fn=launch,
                )
                self._pexpect_quiet()
        except (pexpect.ExceptionPexpect, OSError, subprocess.SubprocessError) as e:
            raise SetupError(f"cannot start the jail ({argv[0]}): {e}") from e
        self.fd: int = self.child.child_fd
        # Non-blocking: read first and only select() when the PTY is empty (a select
        # before every read costs ~10% of bulk throughput).
        os.set_blocking(self.fd, False)
        self.pid: int = self.child.pid
        self.probe = Prober(self.pid, mode, self._write)

    def _pexpect_quiet(self) -> None:
        # pexpect sleeps 50 ms before every send by default: 100x our per-command budget.
        self.child.delaybeforesend = None
        # pexpect also sleeps 0.1 s in close() and after terminate(): the jail is already
        # SIGKILLed by then, so those sleeps only slow every kill and close down.
        self.child.delayafterclose = 0.0
        self.child.delayafterterminate = 0.0
        self.child.ptyproc.delayafterclose = 0.0
        self.child.ptyproc.delayafterterminate = 0.0

    # -- start-up ---------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Eval the rc file and wait for the first prompt's end marker."""
        self._write(b' eval "$__SBX_RC"\n')
        deadline = time.monotonic() + timeout
        prompt = marker.prompt_re(self.nonce.encode())
        seen = b""
        while (m := prompt.search(seen)) is None:
            data = self._read_some(deadline)
            if data is None:
                raise SetupError(
                    f"the jailed shell did not come up within {timeout:.0f}s; "
                    f"it printed: {seen[-2000:].decode(errors='replace')!r} "
                    "(run `sandbox doctor`)"
                )
            if data == b"":
                raise SetupError(
                    "the jail exited during start-up; it printed: "
                    f"{seen[-2000:].decode(errors='replace')!r} (run `sandbox doctor`)"
                )
            seen += data
        rest = seen[m.end():]
        if self.mode == "api":
            self._buf = rest
        else:
            self._start_rest = seen[m.start():]
        self.probe.start()

    # -- I/O ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                # The PTY's input buffer is full until bash reads: wait for room.
                fdwait.ready(self.fd, fdwait.WRITE, 1.0)
                continue
            except OSError as e:
                raise SessionClosed(f"the shell is gone: {e}") from e
            view = view[n:]

    def _read_some(self, deadline: float) -> bytes | None:
        """Bytes from the PTY; b'' at EOF; None at the deadline."""
        while True:
            try:
                return os.read(self.fd, _READ)
            except BlockingIOError:
                pass
            except OSError:  # EIO: the other side of the PTY closed
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready = fdwait.ready(self.fd, fdwait.READ, remaining)
            except (OSError, ValueError):
                return b""
            if not ready:
                return None

    def _drain_now(self) -> bytes:
        out = b""
        while True:
            try:
                data = os.read(self.fd, _READ)
            except OSError:  # BlockingIOError: nothing more; EIO: gone
                return out
            if not data:
                return out
            out += data

    # -- commands -------------------------------------------------------------------------

    def run(self, command: str, timeout: float) -> RawResult:
        """Run one command; never raises on timeout (the result says timed_out)."""
        with self._lock:
            if self.closed:
                raise SessionClosed("the shell is closed")
            started = time.time()
            t0 = time.monotonic()
            line = f"\\__sbx_run {quote_ansi_c(command)}\n".encode()
            self.probe.sent(len(line))
            self._write(line)
            result = self._collect(t0 + timeout)
            result.started = started
            result.duration = time.monotonic() - t0
            return result

    def _collect(self, deadline: float) -> RawResult:
        state = Collect(self.nonce.encode(), self.max_output, self.probe)
        buf = self._buf
        self._buf = b""
        timed_out = False
        interrupted_at = 0.0
        kill_rounds = 0
        while True:
            if buf:
                buf = state.feed(buf)
                if state.phase == "done":
                    # bash is at its prompt now: anything it printed before is already in
                    # the PTY. One of our markers there is the real end of a command that
                    # answered the probe itself.
                    buf += self._drain_now()
                    if self._ours.search(buf) is not None:
                        state.flag(FORGED, "a marker of ours after the probe's end: the "
                                   "command answered the probe itself; its result is forged")
                    self._buf = buf
                    return state.result(timed_out)
            data = self._read_some(deadline if not timed_out else interrupted_at + 1.0)
            if data is None:
                if not timed_out:
                    timed_out = True
                    interrupted_at = time.monotonic()
                    if state.phase == "probe" and not state.probe_c:
                        state.flag(FORGED, "the command was still running after its end "
                                   "marker: that marker was forged")
                    if state.phase == "probe":
                        state.reprobe = True  # Ctrl-C flushes the probe line
                    self._interrupt()
                    continue
                # Ctrl-C did not bring the prompt back: kill what bash is running. Bounded:
                # something that respawns faster than we kill gets the shell closed.
                kill_rounds += 1
                if kill_rounds <= 5 and self.probe.kill_foreground():
                    interrupted_at = time.monotonic()
                    continue
                self.closed = True
                for why in self.probe.identity_problems():
                    state.flag(HOOKS, why)
                state.flag(MISSING, "the shell never printed the command's end marker")
                state.text(buf)
                return state.result(True, shell_exited=True)
            if data == b"":
                self.closed = True
                state.text(buf)
                return state.result(timed_out, shell_exited=True)
            buf += data

    def _interrupt(self) -> None:
        self.probe.forget_input()
        with contextlib.suppress(SessionClosed):
            self._write(b"\x03")

    # -- interactive ------------------------------------------------------------------------

    def interact(self, on_command: OnCommand, on_tamper: OnTamper | None = None) -> None:
        """Pass the operator's terminal through; report each command to `on_command` and
        each sign of tampering to `on_tamper(kind, detail)`."""
        parser = InteractiveParser(self.nonce.encode(), self.max_output, on_command,
                                   on_tamper, self.probe.identity_problems)
        relay(self.child, self.fd, self._start_rest, parser)

    # -- end ----------------------------------------------------------------------------------

    def alive(self) -> bool:
        return bool(self.child.isalive())

    def close(self, force: bool = True) -> int | None:
        """End the jail (its whole PID namespace dies with firejail's first process)."""
        self.closed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL if force else signal.SIGTERM)
        # A command running in another thread sits in select() on the PTY: closing the fd
        # under it would not wake it (it would wait out its whole timeout). The jail's
        # death gives it EOF at once; let it return, then close.
        got = self._lock.acquire(timeout=5.0)
        try:
            try:
                self.child.close(force=True)
            except Exception as e:  # the jail is SIGKILLed already; this only reaps
                log.debug("sandbox: closing the pty: %s", e)
        finally:
            if got:
                self._lock.release()
        self.probe.close()
        status = self.child.exitstatus
        return int(status) if status is not None else None
