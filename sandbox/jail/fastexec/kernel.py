"""What the kernel says about a process, for fast exec: its pidfd's info (PIDFD_GET_INFO:
pid, parent, uid, cgroup, and the exit status once reaped), the pidfd a socket's peer
sent (SCM_PIDFD), its state in /proc, and whether this kernel can vouch at all."""

from __future__ import annotations

import array
import errno
import fcntl
import functools
import os
import socket
import struct
import subprocess
from dataclasses import dataclass

SO_PASSPIDFD, SCM_PIDFD = 76, 4  # Linux 6.5
PIDFD_GET_INFO = 0xC040FF0B  # _IOWR(0xFF, 11, struct pidfd_info): Linux 6.13
INFO_PID, INFO_CREDS, INFO_CGROUPID, INFO_EXIT = 1, 2, 4, 8  # PIDFD_INFO_EXIT: Linux 6.15
_INFO = struct.Struct("=QQIIIIIIIIIIIiII")  # struct pidfd_info, 64 bytes


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



def proc_state(stat_fd: int) -> str:
    """The state letter (R, S, T, Z, ...) of the process whose /proc/PID/stat `stat_fd`
    is open on, "" when it is gone. One pread per exec: an open fd reads the live file
    again, without the path walk (which was most of this check's cost)."""
    try:
        stat = os.pread(stat_fd, 512, 0)
    except OSError:
        return ""
    return stat[stat.rfind(b")") + 2:][:1].decode()


def pidfd_from(anc: list[tuple[int, int, bytes]]) -> int | None:
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



def fd_owner(pid: int) -> int:
    """Whose /proc/PID/fd is: root's when the process is non-dumpable (/proc/PID itself
    keeps the process's uid)."""
    try:
        return os.stat(f"/proc/{pid}/fd").st_uid
    except OSError:
        return -1

