"""Build (once) what the image tests need from Debian's archive: `python -m tests.images.build`.

scripts/test runs this before pytest. It must: while the network tests' fake internet is
up, the host routes 203.0.113.0/24 into a test namespace, and on machines whose package
mirror sits in that range the archive is unreachable until the run ends. The tarball is
kept in /var/cache/sandbox-test-images, keyed by its recipe, so later runs reuse it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/sandbox-test-images")
RECIPE = ["--variant=essential", "--include=python3", "bookworm"]


def run(*argv: str, timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr[-2000:]}"
    return proc.stdout


def debian_rootfs_tar() -> Path:
    """The cached mmdebstrap rootfs tarball (built once per recipe)."""
    key = hashlib.sha256(" ".join(RECIPE).encode()).hexdigest()[:12]
    out = CACHE / f"debian-{key}.tar"
    if out.is_file() and out.stat().st_size > 0:
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    print(f"images: building the test rootfs with mmdebstrap {' '.join(RECIPE)}",
          file=sys.stderr)
    run("mmdebstrap", "--quiet", *RECIPE[:-1], "--format=tar", RECIPE[-1], str(tmp),
        timeout=900)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(debian_rootfs_tar())
