"""One sandbox's root filesystem in an image: a private copy-on-write upper layer over the
image's shared, read-only rootfs.

    <state>/uppers/<sid>/                the session's own: a tmpfs of [limits] disk_mib
        upper/  work/                    (or a plain directory with no quota)
    /run/sandbox-root/<sid>              an empty, root-owned mount point

The overlay itself is mounted in the jail's own mount namespace by the launch (see
`launch.ImageMount`), never in the host's: when the jail dies, so does the mount, however
its owner died. What outlives a crash is the upper directory and the mount point, both
recorded as the session's `image_root` resource before they are relied on, and removed by
close or by `sandbox gc`.

Everything the supervisor writes into the sandbox's root it writes into the *upper*
directory it just made, never through the image's own tree: a layer's symlink (`/etc ->
/host/etc`) could otherwise aim a root write at a host file. Files it reads from the
image (`/etc/passwd`) are opened with O_NOFOLLOW below a directory fd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import SetupError
from .. import launch, mounts
from .store import Image

# Not under /run/sandbox: every jail blacklists that (its hide-list include files).
MOUNT_BASE = Path("/run/sandbox-root")
# Directories firejail's chroot needs in the new root ("cannot find /var in chroot").
NEEDED_DIRS = ("dev", "proc", "sys", "tmp", "var", "var/tmp", "run", "etc", "home", "root")


@dataclass(frozen=True)
class ImageRoot:
    """The host paths that make one sandbox's root, and where its workspace goes."""

    session_id: str
    image: Image
    base: Path  # <state>/uppers/<sid>
    mountpoint: Path
    workdir: str  # inside the jail
    quota: bool
    keep: bool = False

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    def resource(self) -> dict[str, Any]:
        return {"base": str(self.base), "mountpoint": str(self.mountpoint),
                "quota": self.quota, "keep": self.keep, "image": self.image.name,
                "digest": self.image.digest, "workdir": self.workdir}


def _lower_fd(lower: Path, rel: str) -> int | None:
    """An O_PATH fd of `rel` inside `lower`, walked name by name with O_NOFOLLOW; None if
    any component is missing or a link (the image's links are resolved inside the jail,
    by the kernel, never here)."""
    fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in [p for p in rel.split("/") if p]:
            try:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = nfd
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                return None
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def lower_kind(lower: Path, rel: str) -> str | None:
    """'dir', 'file', 'link', 'other' or None (missing) for `rel` in the image."""
    parent, _, name = rel.strip("/").rpartition("/")
    pfd = _lower_fd(lower, parent)
    if pfd is None:
        return None
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(pfd)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "link" if stat.S_ISLNK(st.st_mode) else "other"


def read_lower(lower: Path, rel: str, limit: int = 1 << 20) -> bytes | None:
    """A regular file of the image (no link followed anywhere on the way), or None."""
    fd = _lower_fd(lower, rel)
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(f"/proc/self/fd/{fd}", "rb") as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def has_program(lower: Path, name: str) -> bool:
    """Whether the image has `name` in a usual bin directory, following its links inside
    the image (merged-usr images link /bin to usr/bin)."""
    for d in ("usr/local/bin", "usr/bin", "bin"):
        rel = _resolve(lower, f"{d}/{name}")
        if rel is not None and lower_kind(lower, rel) == "file":
            return True
    return False


def _resolve(lower: Path, rel: str, depth: int = 0) -> str | None:
    """`rel` with the image's symlinks resolved inside the image (bounded), or None."""
    if depth > 16:
        return None
    parts = [p for p in rel.split("/") if p]
    done: list[str] = []
    for i, name in enumerate(parts):
        cur = "/".join([*done, name])
        kind = lower_kind(lower, cur)
        if kind == "link":
            parent = _lower_fd(lower, "/".join(done))
            if parent is None:
                return None
            try:
                target = os.readlink(name, dir_fd=parent)
            finally:
                os.close(parent)
            base = [] if target.startswith("/") else done
            return _resolve(lower, "/".join([*base, target, *parts[i + 1:]]), depth + 1)
        if kind is None and i < len(parts) - 1:
            return None
        done = [p for p in [*done, name] if p != "."]
        while ".." in done:
            k = done.index("..")
            done = done[:max(k - 1, 0)] + done[k + 1:]
    return "/".join(done)


def _mkdirs(upper: Path, lower: Path, rel: str) -> None:
    """Each directory of `rel` in the upper layer, as a real directory (a link or file the
    image has there is covered by it), with the image's mode and owner where it has one."""
    cur = upper
    done = ""
    for name in [p for p in rel.split("/") if p]:
        done = f"{done}/{name}"
        cur = cur / name
        if cur.is_dir() and not cur.is_symlink():
            continue
        mode, uid, gid = 0o755, 0, 0
        pfd = _lower_fd(lower, done)
        if pfd is not None:
            st = os.fstat(pfd)
            os.close(pfd)
            if stat.S_ISDIR(st.st_mode):
                mode, uid, gid = stat.S_IMODE(st.st_mode) & 0o1777, st.st_uid, st.st_gid
        os.mkdir(cur, mode)
        os.chown(cur, uid, gid, follow_symlinks=False)
        os.chmod(cur, mode)


def _write_upper(upper: Path, lower: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    parent = rel.rsplit("/", 1)[0]
    _mkdirs(upper, lower, parent)
    path = upper / rel
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def _account(lower: Path, rel: str, line: str) -> bytes:
    base = read_lower(lower, rel) or b""
    if base and not base.endswith(b"\n"):
        base += b"\n"
    return base + line.encode() + b"\n"


def inside(lower: Path, path: str) -> str:
    """`path` as the kernel will find it in the image: its links resolved inside the
    image, so what the supervisor creates in the upper layer merges with the image's
    directories instead of covering a link (a merged-usr /bin -> usr/bin stays intact)."""
    rel = _resolve(lower, path.strip("/"))
    return path.strip("/") if rel is None else rel


BASH_STATIC = Path("/bin/bash-static")


def prepare(image: Image, *, session_id: str, state_dir: Path, workdir: str,
            disk_mib: int, agent: tuple[int, int, str] | None,
            netns_files: list[tuple[str, str]], workspace: Path,
            login_shell: str | None = None, keep: bool = False, dirs: tuple[Path, ...] = (),
            files_ro: tuple[str, ...] = (),
            ) -> tuple[ImageRoot, list[tuple[str, str]], list[str]]:
    """Make the session's upper layer and mount point (the caller recorded them already),
    and the binds into it: the workspace first, then a shell and the session's /etc files.
    Also returns what the supervisor put in the upper for this session alone (bind targets,
    the agent's account), which `image commit` leaves out of a new image."""
    base = state_dir / "uppers" / session_id
    root = ImageRoot(session_id=session_id, image=image, base=base,
                     mountpoint=MOUNT_BASE / session_id, workdir=workdir,
                     quota=bool(disk_mib), keep=keep)
    base.mkdir(parents=True, exist_ok=False, mode=0o700)
    if disk_mib:
        # A quota on what the sandbox writes anywhere in its root: its pages are charged to
        # the writer's memory cgroup, like the workspace quota's (users.mount_quota).
        mounts.tmpfs(str(base), f"sbx-upper-{session_id}", f"size={disk_mib}m,mode=0700",
                     "the image upper's quota")
    root.upper.mkdir(mode=0o755)
    root.work.mkdir(mode=0o700)
    MOUNT_BASE.mkdir(parents=True, exist_ok=True, mode=0o711)
    root.mountpoint.mkdir(mode=0o755, exist_ok=True)
    lower, upper = image.rootfs, root.upper
    os.chown(upper, 0, 0)
    os.chmod(upper, 0o755)  # the jail's `/`: firejail wants it root's, not writable
    for d in NEEDED_DIRS:
        rel = inside(lower, d)
        if lower_kind(lower, rel) is None:
            _mkdirs(upper, lower, rel)
    at = inside(lower, workdir)
    if not at or lower_kind(lower, at) not in (None, "dir"):
        raise SetupError(f"image {image.name}: the workdir {workdir} is not a directory in "
                         "it (set [image] workdir to another path)")
    _mkdirs(upper, lower, at)
    binds = [(str(workspace), "/" + at)]
    for host_dir in dirs:  # host directories the jail sees at their own path (decoy HOME)
        there = inside(lower, str(host_dir))
        _mkdirs(upper, lower, there)
        binds.append((str(host_dir), "/" + there))
    if login_shell:
        # firejail starts every program through the agent's login shell *inside* the new
        # root. An image without it (busybox, distroless) gets a static bash there, the
        # host's own package, read-only: only that wrapper needs it.
        sh = inside(lower, login_shell)
        if lower_kind(lower, sh) is None:
            if not BASH_STATIC.is_file():
                raise SetupError(
                    f"image {image.name} has no {login_shell} (the agent's login shell, "
                    "which firejail starts programs through): apt-get install bash-static "
                    "(scripts/bootstrap.sh installs it)")
            _write_upper(upper, lower, sh, b"", 0o755)
            binds.append((str(BASH_STATIC), "/" + sh))
    for host_file in files_ro:  # the GPU driver's libraries and tools, at their host paths
        there = inside(lower, host_file)
        if lower_kind(lower, there) in (None, "file"):  # an image's own copy is covered
            _write_upper(upper, lower, there, b"", 0o755)
            binds.append((host_file, "/" + there))
    etc = inside(lower, "etc")
    injected: list[str] = []
    if agent is not None:
        uid, gid, name = agent
        for file, line in ((inside(lower, "etc/passwd"),
                            f"{name}:x:{uid}:{gid}:sandbox agent:{workdir}:/bin/sh"),
                           (inside(lower, "etc/group"), f"{name}:x:{gid}:")):
            _write_upper(upper, lower, file, _account(lower, file, line))
            injected.append("/" + file)
    for src, name in netns_files:  # the session's resolv.conf (what `ip netns exec` binds)
        rel = inside(lower, f"{etc}/{name}")
        _write_upper(upper, lower, rel, b"")
        binds.append((src, "/" + rel))
    injected += [dst for _, dst in binds[1:]]
    return root, binds, injected


def seed_workspace(root: ImageRoot, workspace: Path, agent: tuple[int, int] | None) -> bool:
    """Copy what the image holds at its working directory into a fresh workspace, owned by
    the agent: the task's repository stays visible (and editable) under the workspace that
    covers it. Links are copied as links, never followed (`cp -a`, `chown -h`)."""
    rel = root.workdir.strip("/")
    if lower_kind(root.image.rootfs, rel) != "dir":
        return False
    src = root.image.rootfs / rel
    if not any(os.scandir(src)):
        return False
    _mount(["cp", "-a", "--no-preserve=ownership", f"{src}/.", f"{workspace}/"],
           f"copying the image's {root.workdir} into the workspace")
    if agent is not None:
        uid, gid = agent
        _mount(["chown", "-hR", f"{uid}:{gid}", str(workspace)], "handing it to the agent")
    return True


def keep_workspace(root: ImageRoot, workspace: Path, at: str) -> None:
    """Copy the workspace into a kept upper at the path it was bound to (links as links,
    never followed), as a layer would carry it."""
    dest = root.upper / at.strip("/")
    if not dest.is_dir() or dest.is_symlink() or not workspace.is_dir():
        return
    _mount(["cp", "-a", f"{workspace}/.", f"{dest}/"], "keeping the workspace in the layer")


def _mount(argv: list[str], what: str) -> None:
    proc = subprocess.run([launch.tool(argv[0]), *argv[1:]], env=launch.supervisor_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SetupError(f"{what}: {proc.stderr.strip() or proc.returncode}")


def cleanup(resource: dict[str, Any]) -> None:
    """Remove a session's upper and mount point (gc and close); a kept upper stays."""
    base = Path(resource["base"])
    mountpoint = Path(resource["mountpoint"])
    with contextlib.suppress(OSError):
        os.rmdir(mountpoint)
    if resource.get("keep"):
        return
    if os.path.ismount(base):
        mounts.detach(str(base))
    shutil.rmtree(base, ignore_errors=True)
