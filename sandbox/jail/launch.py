"""How the jail's first process starts: from the supervisor's fork to firejail's exec.

The agent's environment (`--env`, `[env.set]`, API `env=`) may name an agent-writable
PATH entry or an `LD_PRELOAD`. So no root helper ever runs with it (red-team H1):
everything the root side needs before firejail happens *in the forked child itself*, in
Python, before the one `exec`:

1. join the session's cgroup (the files the parts name, still root);
2. a new session with no controlling tty, or the session's own pty as one (C1: the
   operator's terminal is never the jail's);
3. enter the session's network namespace (`setns`, instead of `ip netns exec`);
4. a seccomp filter that refuses `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)` to the whole
   tree (C1/M4: no typing into any terminal, not even the jail's own pty). Installed as
   root, so no `no_new_privs` is needed and the setuid firejail still works; firejail
   stacks its own filter on top;
5. drop to the agent user (`setresuid`, no supplementary groups).

Then the child execs firejail by absolute path (resolved once from a trusted system PATH,
never the agent's) with the agent's environment: the first program that ever sees that
environment already runs as the agent user (and firejail is setuid, so the loader ignores
`LD_*` for it anyway).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import platform
import resource
import shutil
import signal
import stat
import struct
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DependencyMissing, SetupError

# Where the supervisor looks for the programs it runs. Never the caller's or the agent's
# PATH: a relative or user-writable entry there would choose the binary root runs.
TRUSTED_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PACKAGES = {"firejail": "firejail", "ip": "iproute2", "nft": "nftables",
             "useradd": "passwd", "usermod": "passwd", "userdel": "passwd", "mount": "mount",
             "umount": "mount", "nsenter": "util-linux"}


def supervisor_env() -> dict[str, str]:
    """The environment of every helper the supervisor runs: nothing the caller chose."""
    return {"PATH": TRUSTED_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def trusted_file(path: Path) -> str | None:
    """Why `path` (and each directory above it) is not safe for root to run, or None."""
    for p in (path, *path.parents):
        try:
            st = p.stat()
        except OSError as e:
            return f"{p}: {e.strerror}"
        if st.st_uid != 0:
            return f"{p} is owned by uid {st.st_uid}, not root"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (p.is_dir() and
                                                               st.st_mode & stat.S_ISVTX):
            return f"{p} is writable by group or others"
    return None


@functools.cache
def tool(name: str) -> str:
    """The absolute, root-owned path of a helper program; DependencyMissing with the fix."""
    found = shutil.which(name, path=TRUSTED_PATH)
    package = _PACKAGES.get(name, name)
    if found is None:
        raise DependencyMissing(
            f"{name} not found in {TRUSTED_PATH}: apt-get install {package} "
            "(or run `sandbox doctor`)")
    real = Path(found).resolve()
    problem = trusted_file(real)
    if problem is not None:
        raise DependencyMissing(
            f"refusing to run {found} as root: {problem}. Fix: reinstall it "
            f"(apt-get install --reinstall {package}) or remove the shadowing copy")
    return str(real)


# -- seccomp: no TIOCSTI / TIOCLINUX ------------------------------------------------------

TIOCSTI = 0x5412
TIOCLINUX = 0x541C
_ARCH = {  # machine -> (AUDIT_ARCH_*, ioctl syscall numbers for that arch)
    "x86_64": (0xC000003E, (16, 0x40000000 | 514)),  # native, x32
    "aarch64": (0xC00000B7, (29,)),
}
_I386 = (0x40000003, (54,))  # 32-bit processes on x86_64
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | 1
_OFF_NR, _OFF_ARCH, _OFF_ARG1 = 0, 4, 24  # struct seccomp_data; arg1's low 32 bits (LE)


@functools.cache  # built once per process: every exec makes a Launch
def _filter_program() -> bytes:
    """A classic BPF program: ioctl(fd, TIOCSTI|TIOCLINUX, ...) -> EPERM, all else allowed."""
    machine = platform.machine()
    if machine not in _ARCH:
        raise SetupError(
            f"no TIOCSTI filter for architecture {machine}: the jail would be able to type "
            "into terminals. Supported: " + ", ".join(_ARCH))
    arches = [_ARCH[machine]] + ([_I386] if machine == "x86_64" else [])
    # Built as (op, jt_label, jf_label, k) then resolved to relative jumps.
    prog: list[tuple[int, str | int, str | int, int]] = []
    labels: dict[str, int] = {}

    def emit(op: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        prog.append((op, jt, jf, k))

    emit(_LD_W_ABS, _OFF_ARCH)
    for i, (arch, _) in enumerate(arches):
        emit(_JEQ_K, arch, 0, f"arch{i + 1}")
        emit(_LD_W_ABS, _OFF_NR)
        _, nrs = arches[i]
        for j, nr in enumerate(nrs):
            last = j == len(nrs) - 1
            emit(_JEQ_K, nr, "arg", "allow" if last else 0)
        labels[f"arch{i + 1}"] = len(prog)
        if i + 1 < len(arches):
            emit(_LD_W_ABS, _OFF_ARCH)
    emit(_RET_K, _RET_ALLOW)  # an arch we do not know: firejail's filter judges it
    labels["arg"] = len(prog)
    emit(_LD_W_ABS, _OFF_ARG1)
    emit(_JEQ_K, TIOCSTI, "deny", 0)
    emit(_JEQ_K, TIOCLINUX, "deny", "allow")
    labels["allow"] = len(prog)
    emit(_RET_K, _RET_ALLOW)
    labels["deny"] = len(prog)
    emit(_RET_K, _RET_EPERM)
    out = bytearray()
    for pc, (op, jt, jf, k) in enumerate(prog):
        def rel(target: str | int, pc: int = pc) -> int:
            return labels[target] - pc - 1 if isinstance(target, str) else target
        out += struct.pack("<HBBI", op, rel(jt), rel(jf), k)
    return bytes(out)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass(frozen=True)
class ImageMount:
    """A sandbox's root in an image, mounted by the child in its own mount namespace (so
    it dies with the jail): overlay(lower, upper) at `target`, then host paths bound over
    directories and files made for them in the upper (the workspace first)."""

    lower: str
    upper: str
    work: str
    target: str
    workdir: str  # where commands start inside the root (firejail --private-cwd)
    binds: tuple[tuple[str, str], ...] = ()  # (host path, absolute path inside the root)
    readonly: tuple[str, ...] = ()  # of those, the ones bound read-only (GPU driver files)

    def overlay_options(self) -> bytes:
        for p in (self.lower, self.upper, self.work):
            if any(c in p for c in ",:\\\n"):
                raise SetupError(f"overlay path {p!r} holds a comma, colon or backslash: "
                                 "set SANDBOX_STATE_DIR to a plain path")
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}".encode()


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_CLONE_NEWNET, _CLONE_NEWNS = 0x40000000, 0x00020000
_MS_BIND, _MS_REC, _MS_SLAVE, _MNT_DETACH = 0x1000, 0x4000, 0x80000, 2
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x20
ETC_NETNS = Path("/etc/netns")


def join_cgroup(files: Sequence[bytes]) -> None:
    """Write "0" (the writing thread: a fresh fork's only one) to each of a group's
    files; OSError if one fails, which fails the spawn (fail closed). os calls only."""
    for path in files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


class Launch:
    """The child-side steps before firejail's exec; built in the parent, run in the child.

    Everything is prepared here (the filter, libc handles) so the child only makes
    system calls: it is a fork of a threaded process.
    """

    def __init__(
        self,
        *,
        agent_uid: int | None,
        agent_gid: int | None,
        netns: str | None,
        join_files: Sequence[bytes] = (),
        setsid: bool = True,
        ctty_fd: int | None = None,
        rlimits: Sequence[tuple[int, int]] = (),
        image: ImageMount | None = None,
    ) -> None:
        self.image = image
        self._image_opts = image.overlay_options() if image is not None else b""
        self.agent = (agent_uid, agent_gid) if agent_uid is not None else None
        self.netns_path = f"/run/netns/{netns}" if netns else None
        # What `ip netns exec` would bind over /etc (the session's resolv.conf).
        self.etc_binds: list[tuple[bytes, bytes]] = []
        if netns and (ETC_NETNS / netns).is_dir():
            self.etc_binds = [(str(p).encode(), f"/etc/{p.name}".encode())
                              for p in sorted((ETC_NETNS / netns).iterdir())]
        self.join_files = list(join_files)  # cgroup files the child writes "0" to
        self.rlimits = list(rlimits)
        self.setsid = setsid
        self.ctty_fd = ctty_fd
        self.root = os.geteuid() == 0
        self._libc = ctypes.CDLL(None, use_errno=True)
        code = _filter_program() if self.root else b""
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = _SockFprog(len(code) // 8, ctypes.cast(self._buf, ctypes.c_void_p))

    def _netns_mounts(self) -> None:
        """As `ip netns exec` does: a mount namespace of our own (slave to the host's),
        a /sys of the new network namespace, and /etc/netns/<ns>/* over /etc."""
        libc = self._libc
        if libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if libc.mount(None, b"/", None, _MS_SLAVE | _MS_REC, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rslave /")
        if libc.umount2(b"/sys", _MNT_DETACH) == 0:
            libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None)
        for src, dst in self.etc_binds:
            if libc.mount(src, dst, None, _MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind {src!r} over {dst!r}")

    def _image_mounts(self, own_ns: bool) -> None:
        """The image root: overlay (nodev, nosuid: a layer's device nodes and setuid files
        are inert), the workspace, the session's /etc files. All in this child's mount
        namespace. Every target exists as a real directory or file in the upper layer the
        supervisor made (`images.rootfs.prepare`), so no image link is followed here."""
        libc, img = self._libc, self.image
        assert img is not None
        if not own_ns:
            if libc.unshare(_CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if libc.mount(None, b"/", None, _MS_SLAVE | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), "mount --make-rslave /")
        target = img.target.encode()
        if libc.mount(b"overlay", target, b"overlay", _MS_NODEV | _MS_NOSUID,
                      self._image_opts) != 0:
            raise OSError(ctypes.get_errno(), f"mount overlay on {img.target}")
        for src, dst in img.binds:
            where = (img.target + dst).encode()
            if libc.mount(src.encode(), where, None, _MS_BIND, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind {src} on {dst} in the image")
            # nodev,nosuid on every bind too: a fresh workspace is seeded (as root) from
            # the image's own working directory, which may hold a layer's device node.
            flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | _MS_NODEV
            if dst in img.readonly:
                flags |= _MS_RDONLY
            if libc.mount(None, where, None, flags, None) != 0:
                raise OSError(ctypes.get_errno(), f"remount {dst} nodev,nosuid in the image")

    def compiled_options(self) -> list[str] | None:
        """These steps as `sandbox-launch` options (see sandbox-launch.c, which runs them in
        the order `__call__` does), or None where only the Python steps can: an image's
        root with more binds than it takes."""
        if self.image is not None and len(self.image.binds) > 250:
            return None
        opts: list[str] = []
        for path in self.join_files:
            opts += ["-c", os.fsdecode(path)]
        if self.ctty_fd is not None:
            opts += ["-y", str(self.ctty_fd)]
        if self.netns_path is not None:
            opts += ["-n", self.netns_path]
            for src, dst in self.etc_binds:
                opts += ["-b", os.fsdecode(src), os.fsdecode(dst)]
        if self.image is not None:
            img = self.image
            opts += ["-o", img.target, os.fsdecode(self._image_opts)]
            for host, inside in img.binds:
                opts += ["-B", host, inside, "1" if inside in img.readonly else "0"]
        if self.root:
            opts += ["-f", _filter_program().hex()]
        for res, value in self.rlimits:
            opts += ["-r", str(res), str(value)]
        if self.agent is not None:
            opts += ["-u", str(self.agent[0]), str(self.agent[1])]
        return opts

    def __call__(self) -> None:
        # Python ignores SIGPIPE and SIGXFSZ; the jail gets the defaults (`yes | head`
        # ends, a write past RLIMIT_FSIZE is the kill it is everywhere else).
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        join_cgroup(self.join_files)  # needs root, so first
        if self.setsid:
            with contextlib.suppress(PermissionError):  # pexpect already made one
                os.setsid()
        if self.ctty_fd is not None:
            fcntl.ioctl(self.ctty_fd, termios.TIOCSCTTY, 0)
        if self.netns_path is not None:
            fd = os.open(self.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            if self._libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.netns_path}")
            os.close(fd)
            self._netns_mounts()
        if self.image is not None:
            self._image_mounts(own_ns=self.netns_path is not None)
        if self.root:
            # Without CAP_SYS_ADMIN this would need no_new_privs, which would stop the
            # setuid firejail; as root it does not.
            rc = self._libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                                  ctypes.byref(self._prog), 0, 0)
            if rc != 0:
                raise OSError(ctypes.get_errno(), "seccomp filter (TIOCSTI)")
        for res, value in self.rlimits:  # inherited through firejail's exec (--join too)
            resource.setrlimit(res, (value, value))
        if self.agent is not None:
            uid, gid = self.agent
            assert gid is not None
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
