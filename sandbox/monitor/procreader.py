"""The exec monitor's reader: the kernel's proc connector, read in a process of its own.

A process's argv can only be read from /proc while it lives, and many live for a few
milliseconds (`ssh -R` to an unknown host exits in about 8 ms). Read from a thread of
the supervisor, every /proc read waits for the GIL, and while other threads judge and
store events (an exec flood in another session) that wait reaches tens of milliseconds:
short-lived processes are gone before their argv is read. So `ProcessMonitor` runs this
file as a small child process (`python -I procreader.py PARENT_PID`, standard library
only, no GIL shared with the supervisor). For every fork, exec and exit on the host it
writes one frame to stdout: a 4-byte little-endian length, then a `marshal`led tuple:

    ("F", ppid, child)        a new process (threads are skipped)
    ("E", pid, info | None)   an exec; info = proctree.ProcInfo fields, read at once
    ("X", pid)                a process exited
    ("L",)                    the kernel dropped events (ENOBUFS)
    ("S", token)              answer to a line `token` on stdin: all events the kernel
                              had queued before the request were written before this
    ("OK",) / ("ERR", why)    first frame: subscribed, or why not

It exits when stdin closes or its parent dies (PR_SET_PDEATHSIG). The same parsing runs
in-process when the child cannot be started (`ProcessMonitor` falls back to it).
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
EV_FORK, EV_EXEC, EV_EXIT = 0x1, 0x2, 0x80000000
NLMSG = struct.Struct("=IHHII")
CNMSG = struct.Struct("=IIIIHH")
EVHDR = struct.Struct("=IIQ")
DATA_OFF = NLMSG.size + CNMSG.size + EVHDR.size  # union proc_event.event_data
_FRAME = struct.Struct("<I")
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: room for bursts while the supervisor is busy


def subscribe() -> socket.socket:
    """A netlink socket subscribed to the proc connector (root / CAP_NET_ADMIN)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    try:
        with contextlib.suppress(OSError):  # a big buffer rides out fork storms
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        sock.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        cn = CNMSG.pack(CN_IDX_PROC, 1, 0, 0, len(op), 0) + op
        sock.send(NLMSG.pack(NLMSG.size + len(cn), 3, 0, 0, 0) + cn)  # 3 = NLMSG_DONE
    except OSError:
        sock.close()
        raise
    return sock


def parse(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(what, a, b) per event in one netlink datagram: fork (ppid, child) for processes
    only, exec (pid, 0), exit (pid, 0) for processes only."""
    off = 0
    while off + DATA_OFF <= len(data):
        length = NLMSG.unpack_from(data, off)[0]
        what = EVHDR.unpack_from(data, off + NLMSG.size + CNMSG.size)[0]
        at = off + DATA_OFF
        if what == EV_FORK:
            ppid, _ptgid, child, child_tgid = struct.unpack_from("=4I", data, at)
            if child == child_tgid:  # a process, not a thread
                yield EV_FORK, ppid, child
        elif what == EV_EXEC:
            yield EV_EXEC, struct.unpack_from("=I", data, at + 4)[0], 0
        elif what == EV_EXIT:
            pid, tgid = struct.unpack_from("=2I", data, at)
            if pid == tgid:
                yield EV_EXIT, pid, 0
        off += max(length + 3 & ~3, DATA_OFF)


def frame(record: tuple[Any, ...]) -> bytes:
    body = marshal.dumps(record)
    return _FRAME.pack(len(body)) + body


def frames(buf: bytearray) -> list[tuple[Any, ...]]:
    """Decode and remove the complete frames at the start of `buf`."""
    out = []
    off = 0
    while len(buf) - off >= _FRAME.size:
        n = _FRAME.unpack_from(buf, off)[0]
        if len(buf) - off - _FRAME.size < n:
            break
        out.append(marshal.loads(bytes(buf[off + _FRAME.size:off + _FRAME.size + n])))
        off += _FRAME.size + n
    del buf[:off]
    return out


# -- the child process --------------------------------------------------------------------


def _proctree() -> ModuleType:
    """sandbox.monitor.proctree, loaded by path: the child imports nothing of the package."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proctree.py")
    spec = importlib.util.spec_from_file_location("_sandbox_proctree", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def _run_first() -> None:
    """Wake before the jailed processes do: they may live for a millisecond, and under a
    CPU-bound flood a normal task waits its turn for longer. The lowest real-time
    priority (the work per event is small and bounded, and the kernel keeps 5 % of
    every CPU for other tasks), else the highest nice value."""
    if os.environ.get("SANDBOX_READER_PLAIN"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)


def _write(out: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def main() -> int:
    _die_with_parent(int(sys.argv[1]))
    out = sys.stdout.fileno()
    with contextlib.suppress(OSError):
        import fcntl

        fcntl.fcntl(out, 1031, _PIPE_BYTES)  # F_SETPIPE_SZ
    try:
        sock = subscribe()
    except OSError as e:
        _write(out, frame(("ERR", f"proc connector unavailable ({e})")))
        return 2
    pt = _proctree()
    _run_first()
    _write(out, frame(("OK",)))

    def events(data: bytes) -> bytes:
        chunks = []
        for what, a, b in parse(data):
            if what == EV_EXEC:
                i = pt.info(a)
                info = (i.pid, i.ppid, i.argv, i.exe, i.comm, i.uid, i.start, i.argv_bytes,
                        i.argv_truncated)
                chunks.append(frame(("E", a, info)))
            elif what == EV_FORK:
                chunks.append(frame(("F", a, b)))
            else:
                chunks.append(frame(("X", a)))
        return b"".join(chunks)

    def read_socket(block: bool) -> bytes:
        """Everything queued on the socket now (one datagram when `block`)."""
        sock.setblocking(block)
        got = []
        try:
            while True:
                got.append(events(sock.recv(65536)))
                if block:
                    break
                sock.setblocking(False)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            got.append(frame(("L",)))
        return b"".join(got)

    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    poll.register(0, select.POLLIN)
    pending = b""
    while True:
        for fd, _ev in poll.poll(1000):
            if fd == sock.fileno():
                _write(out, read_socket(block=False))
            else:
                data = os.read(0, 4096)
                if not data:
                    return 0
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    _write(out, read_socket(block=False) + frame(("S", int(line))))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
