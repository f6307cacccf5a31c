"""Files in and out of a running sandbox, as the agent user inside the jail's own view.

Every transfer is an exec of a standard tool (`cat`, `tar`) in the jail, so hidden paths
stay hidden, the agent's permissions apply and a path the agent controls (a symlink to
/etc/shadow) leads nowhere it could not go itself. What comes out to the host is only
ever written as plain files and directories under the caller's destination: a tar from
the jail is hostile input and links, devices, absolute names and `..` are refused.

Each transfer is an event in the record (`file.read`, `file.write`, `file.upload`,
`file.download`) with the path, the size and the sha256 of the bytes moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..result import ExecResult
from ..textsafe import visible
from .execute import MAX_OUTPUT, exec_async, exec_sync, recorder
from .hostfs import extract_plain, open_source, tar_of

if TYPE_CHECKING:
    from ..session import Session

MAX_TRANSFER = 1 << 30  # a tar of a workspace; beyond, the caller passes max_bytes

_ERRORS: tuple[tuple[str, type[OSError]], ...] = (
    ("No such file or directory", FileNotFoundError),
    ("Permission denied", PermissionError),
    ("Read-only file system", PermissionError),
    ("Is a directory", IsADirectoryError),
    ("Not a directory", NotADirectoryError),
)


class OutputLimitExceeded(OSError):
    """A file or archive is larger than the limit the caller passed."""


def _raise_for(path: str, r: ExecResult, what: str) -> None:
    for needle, exc in _ERRORS:
        if needle in r.stderr:
            raise exc(f"{what} {path!r} in the sandbox: {needle}")
    # the tool's message names the agent's files: shown, never interpreted
    raise OSError(f"{what} {path!r} in the sandbox failed (exit {r.returncode}): "
                  f"{visible(r.stderr.strip()[-300:])}")


def _event(session: Session, kind: str, path: str, data: bytes, digest: str = "",
           **extra: object) -> None:
    session.emit(kind, {"path": path, "bytes": len(data),
                        "sha256": digest or hashlib.sha256(data).hexdigest(), **extra})


_HASH_APART = 1 << 20  # from here on, the sha256 is taken on a thread while the exec runs


def _sha256_meanwhile(data: bytes) -> asyncio.Future[str] | None:
    """The file event's sha256 of a large upload, taken beside its exec (hashlib lets go
    of the GIL: 5 MB is ~3 ms here, a fifth of a write_file); None: hash it inline."""
    if len(data) < _HASH_APART:
        return None
    return asyncio.get_running_loop().run_in_executor(
        recorder(), lambda: hashlib.sha256(data).hexdigest())


async def _read(session: Session, argv: list[str], path: str, max_bytes: int,
                what: str) -> bytes:
    r = await exec_async(session, argv, max_output=max_bytes + 1, record_output=False)
    if r.returncode != 0:
        _raise_for(path, r, what)
    if r.truncated or len(r.stdout_bytes) > max_bytes:
        raise OutputLimitExceeded(f"{what} {path!r} in the sandbox: larger than {max_bytes} "
                                  "bytes (pass a larger max_bytes)")
    return r.stdout_bytes


async def read_file(session: Session, path: str, *, max_bytes: int = MAX_OUTPUT) -> bytes:
    """The file's bytes as the agent sees them; OSError subclasses name the path."""
    data = await _read(session, ["/bin/cat", "--", path], path, max_bytes, "reading")
    _event(session, "file.read", path, data)
    return data


# Parent directories made only when missing, by shell builtins: `$(dirname ..)` and a
# `mkdir` were two more processes on every write (a quarter of a small one's time).
_WRITE = ('case $1 in */*) d=${1%/*}; [ -z "$d" ] || [ -d "$d" ] || mkdir -p -- "$d" '
          '|| exit;; esac; cat > "$1"')


async def write_file(session: Session, path: str, data: str | bytes) -> None:
    """Write (create or replace) a file as the agent, creating parent directories."""
    raw = data.encode() if isinstance(data, str) else data
    digest = _sha256_meanwhile(raw)
    try:
        r = await exec_async(session, _write_argv(path), input=raw, record_output=False)
    finally:
        sha = await digest if digest is not None else ""
    _written(session, path, raw, r, sha)


def write_file_sync(session: Session, path: str, data: str | bytes) -> None:
    """`Sandbox.write_file`: as `write_file`, the exec driven on the shared loop while
    this thread, which waits anyway, takes the sha256 and then writes the record (a
    recorder thread's hash and hand-offs cost a sync caller ~2 ms a 5 MB write)."""
    raw = data.encode() if isinstance(data, str) else data
    sha: list[str] = []
    r = exec_sync(session, _write_argv(path), input=raw, record_output=False,
                  meanwhile=lambda: sha.append(hashlib.sha256(raw).hexdigest()))
    _written(session, path, raw, r, sha[0] if sha else "")


def _write_argv(path: str) -> list[str]:
    return ["/bin/sh", "-c", _WRITE, "sh", path]


def _written(session: Session, path: str, raw: bytes, r: ExecResult, sha: str) -> None:
    if r.returncode != 0:
        _raise_for(path, r, "writing")
    _event(session, "file.write", path, raw, sha)


# -- trees: tar streams ---------------------------------------------------------------

_UNTAR = 'mkdir -p -- "$1" && cd -- "$1" && exec tar -x --no-same-owner --no-same-permissions'


async def import_tar(session: Session, data: bytes, path: str = ".") -> None:
    """Unpack a tar stream into `path` (relative to the workspace) as the agent user."""
    digest = _sha256_meanwhile(data)
    try:
        r = await exec_async(session, ["/bin/sh", "-c", _UNTAR, "sh", path], input=data,
                             cwd=".", record_output=False)
    finally:
        sha = await digest if digest is not None else ""
    if r.returncode != 0:
        _raise_for(path, r, "unpacking into")
    _event(session, "file.upload", path, data, sha, archive=True)


async def export_tar(session: Session, path: str = ".", *,
                     max_bytes: int = MAX_TRANSFER) -> bytes:
    """`path` (a directory, relative to the workspace) as an uncompressed tar stream."""
    data = await _read(session, ["/bin/tar", "-c", "-C", path, "."], path, max_bytes,
                       "archiving")
    _event(session, "file.download", path, data, archive=True)
    return data


async def upload(session: Session, host_path: str | os.PathLike[str], path: str) -> None:
    """Copy a host file or directory to `path` in the sandbox (owned by the agent). It
    is read by fd, one name at a time, as `open_dir_trusted` walks: a link another user
    (the agent, in its workspace) made is never followed, not even one swapped in while
    the tree is read, since the supervisor reading it would hand that user any host file."""
    fd = open_source(Path(os.path.abspath(host_path)))
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            data = tar_of(fd)
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                await write_file(session, path, fh.read())
            return
    finally:
        os.close(fd)
    await import_tar(session, data, path)


_PACK = 'cd -- "$(dirname -- "$1")" && exec tar -c -- "$(basename -- "$1")"'


async def download(session: Session, path: str, host_path: str | os.PathLike[str], *,
                   max_bytes: int = MAX_TRANSFER) -> None:
    """Copy a sandbox file or directory to `host_path` (a file, or a directory that
    will hold the tree's contents)."""
    data = await _read(session, ["/bin/sh", "-c", _PACK, "sh", path], path, max_bytes,
                       "downloading")
    extract_plain(data, Path(host_path))
    _event(session, "file.download", path, data, archive=True)
