"""The supervisor's own tmpfs mounts (a fresh workspace's quota, an image upper's), made
and removed with mount(2) and umount2(2) directly.

Each used to be a `mount` or `umount -l` process: a fork of the supervisor (whose page
tables grow with every live sandbox) and an exec, ~1.5 ms a start and again a close on
an idle host, more with hundreds of sandboxes alive. Nothing else is lost: util-linux
writes no utab entry for a plain tmpfs.
"""

from __future__ import annotations

import ctypes
import functools
import os

from ..errors import SetupError

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def tmpfs(target: str, source: str, options: str, what: str) -> None:
    """Mount a nosuid, nodev tmpfs named `source` on `target` with `options` (size=...);
    SetupError naming `what` when the kernel refuses."""
    rc = _libc().mount(os.fsencode(source), os.fsencode(target), b"tmpfs",
                       MS_NOSUID | MS_NODEV, os.fsencode(options))
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what} failed: mount -t tmpfs -o {options},nosuid,nodev "
                         f"{source} {target}: {os.strerror(err)}")


def detach(target: str) -> None:
    """`umount -l target`: off the tree now, freed when the last user lets go. Quiet
    when nothing is mounted there."""
    _libc().umount2(os.fsencode(target), MNT_DETACH)
