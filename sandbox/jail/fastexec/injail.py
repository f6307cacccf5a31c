"""The exec helper in Python: the same helper as `sandbox-exec.c` (whose comment holds
the protocol), for a host without a C compiler. Runs inside a session's jail and forks
the commands `exec` asks for.

Shipped as package data and read by the supervisor, which sends it over the socket on fd
0 of one `firejail --join` made at session start (see `helper.BOOT`): so it lives in
the jail with everything the agent's shell has (namespaces, seccomp filters, no
capabilities, no-new-privs, cgroup, agent uid, rlimits, the TIOCSTI filter), and it is
reached only over that inherited socket, never over a path in the jail. Standard library
only: it runs under the jail's own python3.

It is *not* trusted. It shares the agent's uid, so the supervisor takes every command's
identity and exit status from the kernel (a pidfd the command itself hands over on its
socket: SCM_PIDFD; the pidfd's exit info once it is reaped), and compares this helper's
word with it. It makes itself non-dumpable, so the agent cannot ptrace it or take its
fds; the supervisor checks that too (/proc/PID then belongs to root).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import sys

_PR_SET_DUMPABLE, _PR_SET_NAME = 4, 15
_IGNORED: list[int] = []  # signals set to SIG_IGN in the helper (see main)
# The agent's login shell (the boot's argument): what runs a builtin or a #!-less script.
_SHELL = os.fsencode(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1][:1] == "/" else b""


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frame(sock: socket.socket) -> bytes:
    return _read_exact(sock, int.from_bytes(_read_exact(sock, 4), "big"))


def _request(ctl: socket.socket) -> tuple[list[int], bytes]:
    """One request: its fds and its body (EOFError once the supervisor closes)."""
    head, anc, _flags, _addr = ctl.recvmsg(4, socket.CMSG_SPACE(4 * 4),
                                           socket.MSG_CMSG_CLOEXEC | socket.MSG_WAITALL)
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(data) // 4}i", data[:len(data) // 4 * 4]))
    if len(head) < 4:
        if head:
            head += _read_exact(ctl, 4 - len(head))
        else:
            raise EOFError
    return fds, _read_exact(ctl, int.from_bytes(head, "big"))


def _pairs(items: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(kv.partition(b"=")[0], kv.partition(b"=")[2]) for kv in items]


def _parse(body: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]], bytes]:
    """A request's body: argc, envc (4 bytes each, little endian), then cwd, argv and
    "key=value" env, each NUL-terminated."""
    argc, envc = struct.unpack("<II", body[:8])
    items = body[8:].split(b"\0")[:-1]
    if argc == 0 or len(items) != 1 + argc + envc:
        raise ValueError("malformed request")
    return items[1:1 + argc], _pairs(items[1 + argc:]), items[0]


def _execvpe(argv: list[bytes], env: dict[bytes, bytes]) -> None:
    """execvp(3)'s search of PATH. Not `os.execvpe`: that imports `warnings` in the child
    on every call (a millisecond, more than the rest of the start)."""
    name = argv[0]
    if b"/" in name:
        os.execve(name, argv, env)
    path = env.get(b"PATH", b"/usr/local/bin:/usr/bin:/bin")
    denied: OSError | None = None
    for d in path.split(b":"):
        try:
            os.execve(os.path.join(d or b".", name), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as e:  # execvp: remember it, try the rest, then report it
            denied = e
    raise denied or FileNotFoundError(name)


def _child(fds: list[int], argv: list[bytes], env: dict[bytes, bytes], cwd: bytes) -> None:
    """In the forked child: become the command (never returns)."""
    sock, stdin, stdout, stderr = fds
    try:
        signal.set_wakeup_fd(-1)
        # The command gets default dispositions. execve resets every handled signal by
        # itself; only the ignored ones (SIGPIPE, SIGXFSZ: Python's) would carry over.
        for sig in _IGNORED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()  # its own session: the supervisor kills the tree by it (detached jobs)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        # The kernel attaches this process's pidfd: what the supervisor trusts.
        os.write(sock, b"S")
        # ...and waits for its go: until then it lives, so the kernel can still say whose
        # child it is (a `true` would be reaped before the supervisor asked).
        if os.read(sock, 1) != b"G":
            os._exit(127)
        try:
            try:
                _execvpe(argv, env)
            except OSError as e:
                # As sandbox-exec.c: a builtin or a script with no #! line runs through
                # the login shell, as on the joined path.
                builtin = isinstance(e, FileNotFoundError) and b"/" not in argv[0]
                if _SHELL and (builtin or e.errno == errno.ENOEXEC):
                    os.execve(_SHELL, [_SHELL, b"-c", b'"$@"', _SHELL, *argv], env)
                raise
        except OSError as e:
            name = os.fsdecode(argv[0])
            why = "command not found" if isinstance(e, FileNotFoundError) else e.strerror
            os.write(2, f"{name}: {why}\n".encode(errors="replace"))
            os._exit(127 if isinstance(e, FileNotFoundError) else 126)
    finally:
        os._exit(127)


def main(ctl: socket.socket) -> None:
    # No ptrace, no /proc/PID/fd, no pidfd_getfd by the agent (same uid). Where this
    # fails, the supervisor sees /proc/PID still the agent's and stays on the join.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        # Its name in ps/pgrep: not one of the agent's own python3 processes.
        libc.prctl(_PR_SET_NAME, b"sandbox-exec", 0, 0, 0)
    base = dict(_pairs(_frame(ctl).split(b"\0")[:-1]))
    here = os.environb
    # What firejail did to the environment it was given (added container=firejail,
    # dropped what it drops): done the same way to every command's environment.
    added = {k: v for k, v in here.items() if base.get(k) != v}
    dropped = {k for k in base if k not in here}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Looked up once, not per command: what is ignored here (inherited, or Python's own)
    # and must not stay ignored in a command.
    _IGNORED.extend(s for s in signal.valid_signals()
                    if s not in (signal.SIGKILL, signal.SIGSTOP)
                    and signal.getsignal(s) == signal.SIG_IGN)
    children: dict[int, socket.socket] = {}
    ctl.sendall(b"H")
    while True:
        try:
            ready = select.select([ctl.fileno(), wake_r], [], [])[0]
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            sock = children.pop(pid, None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.send(b"X" + struct.pack("<i", status))
                sock.close()
        if ctl.fileno() not in ready:
            continue
        try:
            fds, body = _request(ctl)
        except (EOFError, OSError):
            return  # the supervisor is gone: the session is ending
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        try:
            argv, env_items, cwd = _parse(body)
        except ValueError:
            for fd in fds:
                os.close(fd)
            continue
        env = {k: v for k, v in env_items if k not in dropped}
        env.update(added)
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            _child(fds, argv, env, cwd)
        if pid > 0:
            children[pid] = socket.socket(fileno=os.dup(fds[0]))
        for fd in fds:  # the command holds them now (a failed fork: its socket's EOF)
            os.close(fd)


if __name__ == "__main__":
    main(socket.socket(fileno=sys.stdin.fileno()))
