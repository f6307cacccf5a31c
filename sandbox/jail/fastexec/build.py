"""The compiled exec helper (`sandbox-exec.c`) and jail launcher (`sandbox-launch.c`):
built once per host with the C compiler, static (the helper runs in any image, with or
without a libc; the launcher runs as root, and a static binary has no loader to read the
environment), kept in a cache named by a hash of source and flags, so an upgrade builds
anew and nothing stale is ever run.

`scripts/bootstrap.sh` builds it (`python -m sandbox.jail.fastexec.build`); a session
whose host has no compiler builds nothing and gets the Python helper (`injail.py`, the
same protocol and the same checks, slower to fork). The binary is read by the supervisor
and sent into the jail over the helper's socket: no path in the jail holds it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

CFLAGS = ("-O2", "-static", "-s", "-Wall", "-Wextra")
BUILD_S = 60.0


class BuildError(RuntimeError):
    """The helper could not be compiled; the message says why and what to install."""


def source(name: str = "sandbox-exec") -> bytes:
    return resources.files("sandbox.jail.fastexec").joinpath(f"{name}.c").read_bytes()


def cache_dir() -> Path:
    """Root's builds in /var/cache/sandbox, a user's in $XDG_CACHE_HOME/sandbox
    ($SANDBOX_CACHE_DIR overrides both): not the state dir, which tests make per test."""
    env = os.environ.get("SANDBOX_CACHE_DIR")
    if env:
        base = Path(env)
    elif os.geteuid() == 0:
        base = Path("/var/cache/sandbox")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sandbox"
    return base / "fastexec"


def build(defines: tuple[str, ...] = (), name: str = "sandbox-exec") -> Path:
    """The helper binary (or `name`'s) for these `-D` defines (tests build lying helpers
    with them), compiled now unless the cache holds it. Atomic: a concurrent build
    renames over an identical file."""
    src = source(name)
    flags = CFLAGS + tuple(f"-D{d}" for d in defines)
    key = hashlib.sha256(src + "\0".join(flags).encode()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{key}"
    if out.is_file():
        return out
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise BuildError("no C compiler (cc) for the exec helper: apt-get install gcc "
                         "libc6-dev (scripts/bootstrap.sh installs them)")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        c_file = Path(tmp) / f"{name}.c"
        c_file.write_bytes(src)
        built = Path(tmp) / name
        try:
            proc = subprocess.run([cc, *flags, "-o", str(built), str(c_file)],
                                  capture_output=True, text=True, timeout=BUILD_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BuildError(f"{name}'s build failed: {e}") from e
        if proc.returncode != 0:
            hint = (" (a static build needs libc6-dev: apt-get install libc6-dev)"
                    if "cannot find -lc" in proc.stderr else "")
            raise BuildError(f"{name}'s build failed{hint}: "
                             + proc.stderr.strip()[-600:])
        os.replace(built, out)
    return out


@functools.cache
def binary() -> tuple[bytes | None, str]:
    """The helper's bytes, or None and why there are none (once per process)."""
    try:
        return build().read_bytes(), ""
    except (BuildError, OSError) as e:
        return None, str(e)


@functools.cache
def launcher() -> str | None:
    """The compiled launcher's path (root's cache, root-owned, 0700 dir), or None: the
    launch is then a Python preexec_fn (once per process)."""
    try:
        return str(build(name="sandbox-launch"))
    except (BuildError, OSError):
        return None


def main() -> int:
    try:
        print(build())
        print(build(name="sandbox-launch"))
    except BuildError as e:
        print(f"sandbox-exec: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
