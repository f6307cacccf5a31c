"""The proc connector's events, read for the monitor: from `procreader`, or in-process.

`EventReader` starts the reader child process (`procreader`: it shares no GIL with the
supervisor's busy threads, so a process living a few milliseconds is still read in
time) and applies its frames; when the child cannot be started, or dies, it reads the
netlink socket itself (same events, the GIL shared). Each event goes to a `Sink` (the
tracker) on the reader thread, which therefore must only do bookkeeping. Without
root / CAP_NET_ADMIN there is no connector: `open` says so and the tracker polls.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ... import fdwait
from .. import procreader
from ..procreader import EV_EXEC, EV_FORK, parse, subscribe
from ..proctree import ProcInfo


class Sink(Protocol):
    """Where the reader's events go (the tracker)."""

    def forked(self, ppid: int, child: int) -> None: ...

    def execed(self, pid: int, info: Callable[[], ProcInfo] | None) -> None:
        """`info` is what the reader process read at the exec; None: read it now."""
        ...

    def exited(self, pid: int) -> None: ...

    def overrun(self) -> None:
        """The kernel dropped events, or the reader died: nobody knows whose."""
        ...


def netlink_available() -> tuple[bool, str]:
    """Whether the proc connector can be subscribed to (root / CAP_NET_ADMIN)."""
    try:
        sock = subscribe()
    except OSError as e:
        return False, f"proc connector unavailable ({e}); polling instead"
    sock.close()
    return True, "proc connector"


def _info_from(fields: list[object] | tuple[object, ...] | None
               ) -> Callable[[], ProcInfo] | None:
    if not fields:
        return None
    return lambda: ProcInfo(*fields)


def _spawn_reader() -> tuple[subprocess.Popen[bytes], list[tuple[Any, ...]], bytearray] | None:
    """The reader child process (see `procreader`), subscribed, with what it sent after
    its OK (on a busy host the first events can share the OK's read: they are the
    monitor's, not a reason to give up on the reader); None if it cannot be."""
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", procreader.__file__, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True)
    except OSError:
        return None
    assert child.stdout is not None
    buf = bytearray()
    deadline = time.monotonic() + 5.0
    got: list[tuple[Any, ...]] = []
    while not got and fdwait.ready(child.stdout.fileno(), fdwait.READ,
                                   max(0.0, deadline - time.monotonic())):
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        got = procreader.frames(buf)
    if got and got[0] == ("OK",):
        return child, got[1:], buf
    child.kill()
    child.wait()
    return None


class EventReader:
    """Fork, exec and exit events of the whole host, handed to `sink` as they come."""

    def __init__(self, sink: Sink, stop: threading.Event, *, process: bool = True) -> None:
        self.sink = sink
        self.process = process  # try the reader child process first
        self.child: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._stop = stop
        self._sync_sent = 0
        self._synced = 0
        self._sync_cv = threading.Condition()
        self._early: list[tuple[Any, ...]] = []  # what the reader sent with its OK
        self._early_buf = bytearray()

    def open(self) -> bool:
        """Subscribe (child process first, then in-process); False: no proc connector."""
        spawned = _spawn_reader() if self.process else None
        if spawned is not None:
            self.child, self._early, self._early_buf = spawned
        if self.child is None:  # in-process fallback: same events, the GIL shared
            with contextlib.suppress(OSError):
                self._sock = subscribe()
                self._sock.settimeout(0.2)
        return bool(self.child or self._sock)

    def loop(self) -> None:
        """The reader thread's body (after a successful `open`)."""
        if self.child is not None:
            self._pipe_loop()
        else:
            self._netlink_loop()

    def stop_child(self) -> None:
        """End the reader process (the stop event is already set)."""
        child = self.child
        if child is None:
            return
        with contextlib.suppress(OSError):
            assert child.stdin is not None
            child.stdin.close()  # the reader exits on EOF
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def close(self) -> None:
        """Close the pipes and the socket (after the reader thread has ended)."""
        child = self.child
        if child is not None and child.stdout is not None:
            child.stdout.close()
        if self._sock is not None:
            self._sock.close()

    def cpu_s(self) -> float:
        """CPU seconds the reader process has used (0 without one)."""
        child = self.child
        if child is None:
            return 0.0
        try:
            with open(f"/proc/{child.pid}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def _pipe_loop(self) -> None:
        """Apply the reader process's frames (see `procreader`) as they come."""
        child = self.child
        assert child is not None and child.stdout is not None
        fd = child.stdout.fileno()
        buf, self._early_buf = self._early_buf, bytearray()
        early, self._early = self._early, []
        for rec in early:
            self._dispatch(rec)
        while not self._stop.is_set():
            if not fdwait.ready(fd, fdwait.READ, 0.2):
                continue
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:  # the reader died: events from now on are not seen
                if not self._stop.is_set():
                    self.sink.overrun()
                    self._reader_died()
                return
            buf += chunk
            for rec in procreader.frames(buf):
                self._dispatch(rec)

    def _dispatch(self, rec: tuple[Any, ...]) -> None:
        """One record from the reader child, handed to the sink."""
        kind = rec[0]
        if kind == "F":
            self.sink.forked(rec[1], rec[2])
        elif kind == "E":
            self.sink.execed(rec[1], _info_from(rec[2]))
        elif kind == "X":
            self.sink.exited(rec[1])
        elif kind == "L":
            self.sink.overrun()
        elif kind == "S":
            with self._sync_cv:
                self._synced = max(self._synced, rec[1])
                self._sync_cv.notify_all()

    def _reader_died(self) -> None:
        """Fall back to reading the proc connector in this process."""
        with contextlib.suppress(OSError):
            self._sock = subscribe()
            self._sock.settimeout(0.2)
            self.child = None
            threading.Thread(target=self._netlink_loop, name="sandbox-procmon",
                             daemon=True).start()

    def sync(self, timeout: float) -> None:
        """Wait until the reader process has handed over every event the kernel queued
        before now (a no-op in-process: events are read as they come)."""
        child = self.child
        if child is None or child.stdin is None:
            return
        with self._sync_cv:
            self._sync_sent += 1
            token = self._sync_sent
        try:
            child.stdin.write(f"{token}\n".encode())
            child.stdin.flush()
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        with self._sync_cv:
            while self._synced < token and time.monotonic() < deadline:
                self._sync_cv.wait(max(0.0, min(0.05, deadline - time.monotonic())))

    def _netlink_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the kernel dropped events: tell, look again
                    self.sink.overrun()
                    continue
                if self._stop.is_set():
                    return
                raise
            for what, a, b in parse(data):
                if what == EV_FORK:
                    self.sink.forked(a, b)
                elif what == EV_EXEC:
                    self.sink.execed(a, None)
                else:
                    self.sink.exited(a)
