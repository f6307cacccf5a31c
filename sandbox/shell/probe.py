"""The jailed bash seen from outside, and the probe line that proves an end is real.

After every end marker the reader (`collect`) asks the `Prober`:

- is bash still the program it was at start (its auxv changes on exec), with stdin,
  stdout and stderr on the PTY (`identity_problems`);
- has it read every byte we sent it (/proc/<pid>/io rchar), so no other process took a
  command line or probe off the terminal (`input_problems`);
- is it blocked in its own prompt read, syscall, fd and buffer as at start (a `read`
  builtin or a sourced /dev/tty differ; `idle_problems`);

and then sends the probe line (`__sbx_t=<fresh token>`): only bash's own D can show that
token. Every read is a pread on a kept-open /proc fd or a readlink: no fork per command.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable

from ..errors import SessionClosed
from ..monitor.proctree import descendants, named_descendants


class Prober:
    """Checks on the jailed bash below the jail's first process `jail_pid`."""

    def __init__(self, jail_pid: int, mode: str, write: Callable[[bytes], None]) -> None:
        self.jail_pid = jail_pid
        self.mode = mode
        self._write = write  # raises SessionClosed once the PTY is gone
        self.bash_pid: int | None = None
        # bytes bash had read (/proc/<pid>/io rchar) at the last end marker, and the bytes
        # we have written for it since: it must have read at least those
        self._rchar: int | None = None
        self._sent = 0
        self._io_fd = self._sys_fd = -1  # kept open: a pread is cheaper than an open
        self._idle: list[bytes] | None = None  # /proc/<bash>/syscall at its prompt
        self._identity: tuple[bytes, list[str]] | None = None

    def start(self) -> None:
        """Take bash's baseline at its first prompt: what every later check compares to."""
        self.bash_pid = self._find_bash()
        self._identity = self._read_identity()
        self._rchar = self._read_rchar()
        self._sent = 0
        self._idle = self._idle_signature()

    def sent(self, n: int) -> None:
        """`n` bytes of input were written for bash (it must read them by the next end)."""
        self._sent += n

    def forget_input(self) -> None:
        """Ctrl-C flushes unread input: no count until the next end."""
        self._rchar = None

    def send_probe(self) -> bytes:
        token = secrets.token_hex(8).encode()
        with contextlib.suppress(SessionClosed):
            self._sent += len(token) + 9
            self._write(b"__sbx_t=" + token + b"\n")
        return token

    def close(self) -> None:
        for fd in (self._io_fd, self._sys_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._io_fd = self._sys_fd = -1

    # -- bash's process and its tree ------------------------------------------------------

    def _find_bash(self) -> int | None:
        return next((pid for pid, name in named_descendants(self.jail_pid)
                     if name == "bash"), None)

    def kill_foreground(self) -> bool:
        """SIGKILL every process below the jailed bash; True if something was killed."""
        shell = self.bash_pid if self.bash_pid is not None else self._find_bash()
        victims = descendants(shell) if shell is not None else []
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return bool(victims)

    # -- identity: the same program on the same terminal -----------------------------------

    def _read_identity(self) -> tuple[bytes, list[str]] | None:
        """bash's auxv (new on every exec: the stack and AT_RANDOM move) and where its
        stdin, stdout and stderr point."""
        if self.bash_pid is None:
            return None
        try:
            # Opened each time: an open auxv keeps the mm it was opened on (and an exec
            # brings a new one).
            with open(f"/proc/{self.bash_pid}/auxv", "rb") as f:
                auxv = f.read()
            fds = [os.readlink(f"/proc/{self.bash_pid}/fd/{n}") for n in (0, 1, 2)]
        except OSError:
            return None
        return auxv, fds

    def identity_problems(self) -> list[str]:
        """Why the jailed bash is no longer the recorded one ([] when all is well)."""
        if self._identity is None:
            return []
        now = self._read_identity()
        if now is None:
            return ["the recorded shell is gone or unreadable"]
        problems = []
        if now[0] != self._identity[0]:
            problems.append("the recorded shell was replaced by another program (exec)")
        for n, (was, is_) in enumerate(zip(self._identity[1], now[1], strict=True)):
            if was == is_:
                continue
            if n == 0 and is_ == "/dev/null" and self.mode == "api":
                problems.append("at the end marker the shell was still inside the command "
                                "(its stdin was the command's /dev/null): the marker was "
                                "printed by the command")
            else:
                problems.append(f"the shell's fd {n} was redirected from the terminal to "
                                f"{is_!r}: its output or markers bypass the recorder")
        return problems

    # -- input: bash read what we sent ------------------------------------------------------

    def _read_rchar(self) -> int | None:
        try:
            if self._io_fd < 0:
                self._io_fd = os.open(f"/proc/{self.bash_pid}/io", os.O_RDONLY)
            return int(os.pread(self._io_fd, 64, 0).split(None, 2)[1])  # "rchar: N\n..."
        except (OSError, ValueError, IndexError):
            return None

    def input_problems(self) -> list[str]:
        """At an end marker: bash must have read every byte we sent it since the last one.
        A process that reads the terminal in its place (one holding the PTY from a
        detached session) would take the command line and answer with perfect markers."""
        now = self._read_rchar() if self.bash_pid is not None else None
        was, sent = self._rchar, self._sent
        self._rchar, self._sent = now, 0
        if was is None or now is None or now - was >= sent:
            return []
        return [f"the shell read {now - was} bytes of the {sent} sent to it: another process "
                "took its input from the terminal, so its markers were not bash's"]

    # -- idle: back in its own prompt read ----------------------------------------------------

    def _syscall(self) -> list[bytes] | None:
        try:
            if self._sys_fd < 0:
                self._sys_fd = os.open(f"/proc/{self.bash_pid}/syscall", os.O_RDONLY)
            return os.pread(self._sys_fd, 256, 0).split()[:4]
        except OSError:
            return None

    def _idle_signature(self) -> list[bytes] | None:
        """What bash waiting at its prompt looks like: read(0, <its input buffer>, n)."""
        if self.bash_pid is None:
            return None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            sc = self._syscall()
            if sc is None:
                return None
            if len(sc) == 4 and sc[0] == b"0" and sc[1] == b"0x0":
                return sc
            time.sleep(0.001)
        return None

    def idle_problems(self, limit: float = 0.25) -> list[str]:
        """At an end marker bash must be back at its prompt, blocked reading the terminal
        with its own input buffer (a `read` builtin or a sourced /dev/tty uses another).
        A marker printed by a command that is still running fails this."""
        if self._idle is None:
            return []
        deadline = time.monotonic() + limit
        while True:
            sc = self._syscall()
            if sc is None or sc == self._idle:
                return []
            if time.monotonic() >= deadline:
                return ["at the end marker bash was not waiting at its prompt (it was "
                        f"still running a command: {b' '.join(sc[:2]).decode()}): the "
                        "marker was printed by the command"]
            time.sleep(0.0002)
