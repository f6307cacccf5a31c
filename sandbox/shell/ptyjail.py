"""The api shell's jail on a pty of its own, spawned through `jail.spawn` (the compiled
launcher: subprocess vfork()s) instead of pexpect's fork. pexpect forks the supervisor
and runs Python in the child, whose cost grows with every live sandbox's pages (with 256
alive ~6 ms of CPU a start). The operator's `sandbox shell` keeps pexpect: it needs its
interact loop, and it starts one jail, not hundreds.

What pexpect's spawn did in the child is done here or by the launcher: a new session
(Popen's start_new_session), the pty's slave as fds 0-2 and as the controlling terminal
(the launcher's TIOCSCTTY on fd 0), its window size and modes (set on the slave before
the spawn).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import termios
from typing import Any

from ..jail import spawn
from ..jail.launch import Launch


class PtyJail:
    """The part of pexpect's spawn the api shell uses: pid, child_fd (the master),
    isalive(), close(force), exitstatus."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, launch: Launch,
                 dimensions: tuple[int, int]) -> None:
        master, slave = os.openpty()
        try:
            rows, cols = dimensions
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            termios.tcsetattr(slave, termios.TCSANOW, api_modes(slave))
            launch.ctty_fd = 0  # a Launch is made per spawn: this one's terminal is fd 0
            self.proc = spawn.popen(argv, launch, env=env, cwd=cwd, stdin=slave,
                                    stdout=slave, stderr=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # the jail holds it now: EIO on the master once it is gone
        os.set_inheritable(master, False)
        self.child_fd = master
        self.pid = self.proc.pid
        self.exitstatus: int | None = None
        self._closed = False

    def isalive(self) -> bool:
        return self.proc.poll() is None

    def close(self, force: bool = True) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.child_fd)
        if force and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        code = self.proc.returncode
        self.exitstatus = code if code is not None and code >= 0 else None


def api_modes(fd: int) -> list[Any]:
    """The api shell's pty modes, from `fd`'s: no echo (the command text is not its
    output), no ONLCR (output keeps its own line endings), no ICANON (lines past the 4
    KiB canonical buffer get through). Set before bash reads a byte, rather than by
    `stty` in the rc: that was a process in the jail on every start (~3 ms)."""
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.ONLCR
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    return attrs
