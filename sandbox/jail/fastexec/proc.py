"""A command the exec helper started, as the supervisor drives it: its pipes, its exit
from the pidfd it handed over, its status from the kernel (compared with the helper's
claim), and the `AsyncChild` face `execute` uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
from typing import Any, Protocol, cast

from ... import fdwait
from ...child import AsyncChild, Sink
from .kernel import pidfd_info

REAP_S = 2.0  # from a command's exit to the helper's reap; then it is killed, init reaps
CONFIRM_S = 10.0  # after which a status the kernel never gave is reported as a kill
CLAIM_S = 0.5  # the helper's claim follows its reap at once; a missing one is not waited for


class HelperLink(Protocol):
    """What a command asks of the helper that started it (a `Helper` is one)."""

    @property
    def session(self) -> Any: ...  # its hooks take a tamper alert

    def health(self) -> tuple[str, str] | None: ...

    def off(self, why: str, alert: str | None, detail: dict[str, Any] | None = None
            ) -> None: ...


class FastProc:
    """A command the helper started, as much of `subprocess.Popen` as `AsyncChild` uses;
    its status is the kernel's."""

    def __init__(self, helper: HelperLink, pid: int, pidfd: int, sock: socket.socket,
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
        if not fdwait.ready(self.sock.fileno(), fdwait.READ, timeout):
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
            await readable(self.sock, REAP_S)
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
        from ...child import kill_tree

        kill_tree(self.pid, root=True)


async def readable(sock: socket.socket, timeout: float) -> bool:
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
        # Not a pidfd opened by pid: this command may be reaped already; the pidfd it
        # handed over is the one that cannot be mistaken.
        super().__init__(cast(subprocess.Popen[bytes], proc), on_out, on_err,
                         pidfd=os.dup(proc.pidfd))
        self.fast = proc

    async def wait(self, timeout: float | None = None) -> int:
        await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return await self.fast.confirmed()

    def close(self) -> None:
        super().close()
        self.fast.close()

