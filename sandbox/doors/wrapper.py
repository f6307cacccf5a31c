"""`sandbox run -- cmd`: the wrapped program with its own stdin, stdout and stderr.

The program runs directly under firejail (no recorded shell in between), so its exit
code, signals, binary stdout and the stdout/stderr split are exactly its own. Its output
is copied to ours as it arrives and recorded (capped as the profile says); what it starts
itself is recorded by the process monitor.

The operator's terminal is never the jail's (red-team C1, L8). The jail starts in a new
session with no controlling tty; when our stdin is a terminal, the jail gets a pty of
its own (its controlling tty, with the operator's modes and window size) and we relay
bytes both ways, with the operator's terminal in raw mode meanwhile (so Ctrl-C reaches
the jail as a byte, and the jail's own line discipline turns it into SIGINT). stderr stays
a pipe, so the split survives. Whatever way the session ends, we restore the operator's
modes and flush its input queue once the jail is dead. The launch's seccomp filter
refuses TIOCSTI besides, so not even the jail's own pty can be typed into.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from typing import Any, BinaryIO

from ..errors import SetupError
from ..jail import spawn
from ..session import Session
from ..shell import Capture


class _Relay:
    """Copies the jail's output to ours (and records it); our tty input to the jail."""

    def __init__(self, outs: dict[int, BinaryIO], capture: Capture,
                 stdin_to: int | None) -> None:
        self.outs = dict(outs)
        self.capture = capture
        self.lock = threading.Lock()
        self.stdin_to = stdin_to
        self.stop_r, self.stop_w = os.pipe()

    def run(self) -> None:
        watch = [*self.outs, self.stop_r]
        if self.stdin_to is not None:
            watch.append(0)
        while self.outs:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if self.stop_r in ready and not any(fd in ready for fd in self.outs):
                break
            for fd in ready:
                if fd == self.stop_r:
                    continue
                if fd == 0:
                    self._forward_input(watch)
                    continue
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: every holder of the pty's other side is gone
                    data = b""
                if not data:
                    del self.outs[fd]
                    watch.remove(fd)
                    continue
                out = self.outs[fd]
                with contextlib.suppress(BrokenPipeError, ValueError):
                    out.write(data)
                    out.flush()
                with self.lock:
                    self.capture.add(data)

    def _forward_input(self, watch: list[int]) -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data or self.stdin_to is None:
            watch.remove(0)
            return
        with contextlib.suppress(OSError):
            os.write(self.stdin_to, data)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.stop_w, b"x")

    def close(self) -> None:
        for fd in (self.stop_r, self.stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _OperatorTty:
    """The operator's terminal: raw while the jail runs; restored and flushed after."""

    def __init__(self) -> None:
        self.saved: list[Any] | None = None
        with contextlib.suppress(termios.error, OSError):
            self.saved = termios.tcgetattr(0)

    def pty_for_jail(self) -> tuple[int, int]:
        master, slave = pty.openpty()
        if self.saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(slave, termios.TCSANOW, self.saved)
        self.copy_size(master)
        return master, slave

    @staticmethod
    def copy_size(master: int) -> None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)

    def raw(self) -> None:
        if self.saved is not None:
            with contextlib.suppress(termios.error):
                tty.setraw(0, termios.TCSANOW)

    def restore(self) -> None:
        """Back to the operator's modes; drop anything queued while the jail ran."""
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(0, termios.TCIFLUSH)
        if self.saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSAFLUSH, self.saved)


def run_wrapped(session: Session, program: list[str], timeout: float | None = None) -> int:
    """Run `program` in the session's jail; returns its exit code (128+N for signal N)."""
    text = shlex.join(program)
    blocked = session.hooks.check_command(text)
    if blocked is not None:
        sys.stderr.write(blocked.output + "\n")
        session.close(126)
        return 126
    argv = session.jail_argv(program)
    env = session.env()
    started, t0 = time.time(), time.monotonic()
    session.store.update_session(session.id, current_command=text[:500])
    term = _OperatorTty() if os.isatty(0) else None
    master = slave = None
    if term is not None:
        master, slave = term.pty_for_jail()
    stdout = slave if slave is not None and os.isatty(1) else subprocess.PIPE
    try:
        proc = spawn.popen(
            argv, session.launcher(ctty_fd=0 if slave else None), env=env,
            cwd=str(session.workdir), stdin=slave if slave is not None else None,
            stdout=stdout, stderr=subprocess.PIPE,
        )
    except OSError as e:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        raise SetupError(f"cannot start the jail: {e} (run `sandbox doctor`)") from e
    if slave is not None:
        os.close(slave)  # the jail holds it now: EIO on the master once it is gone
    session.mark_running(proc.pid)
    capture = Capture(session.profile.recording.max_output_bytes)
    assert proc.stderr is not None
    outs: dict[int, BinaryIO] = {proc.stderr.fileno(): sys.stderr.buffer}
    if proc.stdout is not None:
        outs[proc.stdout.fileno()] = sys.stdout.buffer
    elif master is not None:
        outs[master] = sys.stdout.buffer
    relay = _Relay(outs, capture, stdin_to=master)
    pump = threading.Thread(target=relay.run, name="sandbox-relay", daemon=True)
    old_winch = None
    if term is not None and master is not None:
        term.raw()
        old_winch = signal.signal(signal.SIGWINCH, lambda *_: term.copy_size(master))
    pump.start()
    try:
        code = _wait(proc, timeout)
    finally:
        if term is not None:
            term.restore()
            if old_winch is not None:
                signal.signal(signal.SIGWINCH, old_winch)
    pump.join(timeout=5)
    relay.stop()
    pump.join(timeout=1)
    relay.close()
    if master is not None:
        os.close(master)
    with relay.lock:
        output, truncated = capture.result()
    session.record_command(text, output, code, started, time.monotonic() - t0, "run",
                           truncated=truncated, output_bytes=capture.total)
    session.close(code)
    if term is not None:
        term.restore()  # once more: the jail is surely dead now
    return code


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupted = 0
    while True:
        try:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = proc.wait(timeout=left)
            break
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return 124  # like timeout(1)
        except KeyboardInterrupt:
            # Our stdin is not a terminal (with one, Ctrl-C is a byte for the jail's pty)
            # and the jail has a session of its own: pass the interrupt on, then insist.
            interrupted += 1
            with contextlib.suppress(ProcessLookupError, PermissionError):
                proc.send_signal(signal.SIGINT if interrupted == 1 else signal.SIGKILL)
    return 128 - code if code < 0 else code
