"""The host's side of the file door: trees read and written by file descriptor, so no
link on the host is followed (a destination or source in the agent's own workspace holds
links the agent made, and can swap one in at any moment; root following one is root
reading or writing wherever the agent points). What the jail sends is a tar the agent
shaped: only plain files and directories under the destination come out of it."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from ..textsafe import visible


def tar_of(root: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_dir(tar, root, ".")
    return buf.getvalue()


def _add_dir(tar: tarfile.TarFile, dir_fd: int, arc: str) -> None:
    """A directory opened by fd into `tar`: files and directories read by fd (opened
    with O_NOFOLLOW below this fd), links as links, anything else left out."""
    st = os.fstat(dir_fd)
    info = tarfile.TarInfo(arc)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, stat.S_IMODE(st.st_mode), st.st_mtime
    tar.addfile(info)
    for name in sorted(os.listdir(dir_fd)):
        sub = f"{arc}/{name}"
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:  # a link: carried as a link (its text, no target)
                link = tarfile.TarInfo(sub)
                link.type, link.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
                tar.addfile(link)
                continue
            if e.errno in (errno.ENOENT, errno.ENXIO):  # gone meanwhile; a socket
                continue
            raise
        try:
            fst = os.fstat(fd)
            if stat.S_ISDIR(fst.st_mode):
                _add_dir(tar, fd, sub)
            elif stat.S_ISREG(fst.st_mode):
                with os.fdopen(os.dup(fd), "rb") as fh:
                    data = fh.read()
                info = tarfile.TarInfo(sub)
                info.size, info.mode, info.mtime = (len(data), stat.S_IMODE(fst.st_mode),
                                                    fst.st_mtime)
                tar.addfile(info, io.BytesIO(data))
        finally:
            os.close(fd)


def extract_plain(data: bytes, dest: Path) -> None:
    """Unpack a tar made in the jail: its one top entry becomes `dest`. Only regular
    files and directories, names that stay below the top; anything else is refused
    before a byte is written (the archive is the agent's to shape).

    Below `dest`'s parent nothing on the host is followed either: every name is opened
    relative to its directory's fd with O_NOFOLLOW. A destination inside the agent's
    own workspace holds links the agent made (and can swap in at any moment), and the
    supervisor writing through one is root writing wherever the agent points."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        if not members:
            raise OSError("download: the sandbox sent an empty archive")
        top = members[0].name.rstrip("/")
        plan: list[tuple[tarfile.TarInfo, list[str]]] = []
        for m in members:
            rel = posixpath.normpath(m.name)
            if rel == top:
                rest = ""
            elif rel.startswith(top + "/"):
                rest = rel[len(top) + 1:]
            else:
                raise OSError(f"download: archive entry {m.name!r} is outside {top!r}")
            if rest.startswith("/") or ".." in rest.split("/") or not (m.isfile() or
                                                                     m.isdir()):
                raise OSError(f"download: refusing archive entry {m.name!r} "
                              "(only plain files and directories are copied out)")
            plan.append((m, [dest.name, *(p for p in rest.split("/") if p)]))
        with _DirFds(dest.parent) as dirs:
            if members[0].isfile() and len(members) == 1:
                _write_plain(tar, members[0], dirs.open([]), dest.name, dest)
                return
            for m, parts in plan:
                if m.isdir():
                    dirs.open(parts)
                else:
                    _write_plain(tar, m, dirs.open(parts[:-1]), parts[-1],
                                 dest.parent.joinpath(*parts))


class _DirFds:
    """Directories below a root, each opened relative to its parent's fd, created if
    missing, never through a link (ELOOP/ENOTDIR: refused). Closed on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fds: dict[tuple[str, ...], int] = {}

    def __enter__(self) -> _DirFds:
        self.fds[()] = open_dir_trusted(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def open(self, parts: list[str]) -> int:
        key = tuple(parts)
        if key in self.fds:
            return self.fds[key]
        parent = self.open(parts[:-1])
        with contextlib.suppress(FileExistsError):
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
        try:
            fd = os.open(parts[-1], _O_DIR, dir_fd=parent)
        except OSError as e:  # ELOOP (a link), ENOTDIR (a file)
            where = self.root.joinpath(*parts)
            raise OSError(f"download: {visible(where)} exists on the host and is not a plain "
                          f"directory ({e.strerror}); a link there is never followed: "
                          "remove it, or download somewhere else") from None
        self.fds[key] = fd
        return fd


def open_source(src: Path, hops: int = 0) -> int:
    """An fd of host file or directory `src` (absolute), its final name included in the
    walk `open_dir_trusted` does; FileNotFoundError for anything else."""
    try:
        return _open_source_at(src, hops)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"upload: {visible(src)} is not a file or directory on the host") from None


def _open_source_at(src: Path, hops: int) -> int:
    parent = open_dir_trusted(src.parent, create=False)
    try:
        if not src.name:  # "/"
            return os.dup(parent)
        st = os.lstat(src.name, dir_fd=parent)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(src.name, dir_fd=parent)
            if st.st_uid not in (0, os.getuid()) or hops >= 40:
                raise OSError(f"upload: {visible(src)} is a link owned by uid {st.st_uid} "
                              f"(-> {visible(target)}): a link another user (the agent) "
                              "could plant is never followed")
            here = os.readlink(f"/proc/self/fd/{parent}")
            return _open_source_at(Path(os.path.abspath(os.path.join(here, target))), hops + 1)
        fd = os.open(src.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
    finally:
        os.close(parent)
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        os.close(fd)
        raise FileNotFoundError(f"upload: {visible(src)} is not a file or directory on "
                                "the host")
    return fd


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def open_dir_trusted(path: Path, *, create: bool = True) -> int:
    """An fd of directory `path` (missing parts created), resolved one name at a time
    following only links owned by root or by this process's user, as the kernel's
    protected_symlinks does in sticky directories: the caller's own links work
    (/var/run, a home on /data), a link the agent planted in its workspace (owned by
    its uid) is refused, and one swapped in mid-walk fails (ELOOP) instead of being
    followed."""
    trusted = {0, os.getuid()}
    todo = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    fd = os.open("/", _O_DIR)
    hops = 0
    try:
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                todo.append(name)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if st.st_uid not in trusted or hops > 40:
                    raise OSError(
                        f"{visible(path)} goes through a link owned by uid {st.st_uid} "
                        f"({visible(name)} -> {visible(os.readlink(name, dir_fd=fd))}): "
                        "a link another user (the agent) could plant is never followed: "
                        "download elsewhere")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _O_DIR)
                todo.extend(reversed(target.split("/")))
                continue
            nfd = os.open(name, _O_DIR, dir_fd=fd)  # ".." too: the physical parent
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_plain(tar: tarfile.TarFile, m: tarfile.TarInfo, dir_fd: int, name: str,
                 shown: Path) -> None:
    try:  # a link at the destination is replaced, never followed
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    src = tar.extractfile(m)
    assert src is not None
    mode = stat.S_IMODE(m.mode) & 0o755 | 0o600  # no setuid/setgid, owner can read
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode,
                     dir_fd=dir_fd)
    except OSError as e:  # ELOOP: a link swapped in since the check above
        raise OSError(f"download: cannot write {visible(shown)} ({e.strerror})") from None
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
