"""Change a mount's flags inside a live jail, as root, without running any file of the jail.

`nsenter -m -r -- mount ...` would run the jail's own `mount`, with its own loader and
libraries: the host's in a host-filesystem jail, but in an image that is the image's file,
hostile input, run as real root (and Debian's essential images have no mount at all). So
a fresh interpreter of the supervisor's (`-I -S`: no site, no user paths) imports all it
needs first, then enters the jail's mount namespace and root, and makes one mount(2) call:
after the chroot it opens nothing but the target path.
"""

from __future__ import annotations

import subprocess
import sys

from ..errors import SetupError
from . import launch

# Runs as `python -I -S -c _CHILD PID PATH`. Every import is above the setns/chroot.
_CHILD = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid, path = sys.argv[1], sys.argv[2].encode()
ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
if libc.setns(ns, 0x00020000) != 0:  # CLONE_NEWNS
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
os.fchdir(root)
os.chroot(".")
os.chdir("/")
# MS_REMOUNT|MS_BIND changes this mount's own flags only: nosuid, nodev, and no noexec.
flags = 0x20 | 0x1000 | 0x2 | 0x4
if libc.mount(None, path, None, flags, None) != 0:
    sys.exit(f"mount {path.decode()}: " + os.strerror(ctypes.get_errno()))
"""


def make_exec(program_pid: int, path: str) -> None:
    """Remount `path` (as the process sees it) nosuid,nodev and executable."""
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD, str(program_pid), path],
                          env=launch.supervisor_env(), capture_output=True, text=True,
                          timeout=30, check=False)
    if proc.returncode != 0:
        raise SetupError(f"exec_var_tmp: remounting the jail's {path} failed: "
                         f"{proc.stderr.strip() or proc.returncode}")
