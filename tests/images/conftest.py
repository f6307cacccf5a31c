"""Real images, built here without any registry, shared by the image tests.

- `deb`: a small Debian rootfs (mmdebstrap, Debian's own archive: bash, coreutils,
  util-linux, python3), imported with `sandbox image import`.
- `layered`: the same rootfs as an OCI layout (umoci) plus a second layer with a whiteout
  (`.wh.`) and an opaque directory (`.wh..wh..opq`), pulled through skopeo (`oci:`).
- `bb`: busybox-static alone: no bash, no libc.
- `py`: `deb` plus a `python` (the Deep Agents standard suite runs `python`).

The mmdebstrap tarball is slow to make (about 20 s and the archive's bandwidth), so it is
kept in /var/cache/sandbox-test-images keyed by its recipe; everything else is rebuilt for
each run in a store of its own (SANDBOX_IMAGE_DIR), removed at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .build import debian_rootfs_tar, run

STORE = Path("/srv/sandbox-tests-images")


def add_member(tar: tarfile.TarFile, name: str, *, data: bytes = b"", kind: bytes = b"0",
               mode: int = 0o644, link: str = "", uid: int = 0, devmajor: int = 0,
               devminor: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, uid, link
    info.devmajor, info.devminor = devmajor, devminor
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def busybox_rootfs_tar(dest: Path) -> Path:
    """A rootfs of busybox-static and its applet links: no bash, no libc."""
    busybox = Path("/bin/busybox")
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "etc", "tmp", "usr", "usr/bin"):
            add_member(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        add_member(tar, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
        for applet in ("sh", "ls", "cat", "id", "echo", "pwd", "sleep", "env", "touch",
                       "mkdir", "head", "tar", "rm", "stat", "grep", "mknod"):
            add_member(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add_member(tar, "usr/bin/env", kind=tarfile.SYMTYPE, link="/bin/busybox")
        add_member(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
    return dest


def second_layer(dest: Path) -> Path:
    """Over the Debian rootfs: delete /etc/issue (a whiteout), replace /opt/data's whole
    contents (opaque), add a file and a setuid-root copy of python3 is *not* here (see
    test_hostile: setuid comes in a layer of its own)."""
    with tarfile.open(dest, "w") as tar:
        add_member(tar, "etc/.wh.issue")
        add_member(tar, "opt/data", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "opt/data/.wh..wh..opq")
        add_member(tar, "opt/data/new.txt", data=b"from layer two\n")
        add_member(tar, "srv/task", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "srv/task/README", data=b"the task's repository\n")
    return dest


def first_layer_extra(dest: Path) -> Path:
    """What layer two replaces: /opt/data with an old file."""
    with tarfile.open(dest, "w") as tar:
        add_member(tar, "opt", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "opt/data", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "opt/data/old.txt", data=b"from layer one\n")
    return dest


@dataclass(frozen=True)
class Images:
    root: Path
    debian_tar: Path
    layout: Path  # an OCI layout holding `layered:1`
    deb: str = "deb"
    layered: str = "layered"
    bb: str = "bb"
    py: str = "py"


@contextlib.contextmanager
def images_built() -> Iterator[Images]:
    """The test images in a fresh store, until the block ends (the `images` fixture, defined
    once in tests/conftest.py so that every directory shares one store)."""
    from sandbox.jail.images import ImageStore

    shutil.rmtree(STORE, ignore_errors=True)
    STORE.mkdir(parents=True, mode=0o700)
    work = STORE / "build"
    work.mkdir()
    old = os.environ.get("SANDBOX_IMAGE_DIR")
    os.environ["SANDBOX_IMAGE_DIR"] = str(STORE / "store")
    try:
        store = ImageStore()
        deb_tar = debian_rootfs_tar()
        store.import_rootfs(deb_tar, "deb", env=["PATH=/usr/local/bin:/usr/bin:/bin",
                                                 "IMAGE_VAR=from-the-image"])
        store.import_rootfs(busybox_rootfs_tar(work / "bb.tar"), "bb")
        # `py`: deb plus `python` (what python:3 images have and Debian's python3 lacks).
        with tarfile.open(work / "python.tar", "w") as tar:
            add_member(tar, "usr/bin/python", kind=tarfile.SYMTYPE, link="python3")
        store.derive(store.get("deb"), work / "python.tar", "py", "test:python-is-python3")
        layout = work / "layout"
        run("umoci", "init", "--layout", str(layout))
        run("umoci", "new", "--image", f"{layout}:layered:1")
        for layer in (deb_tar, first_layer_extra(work / "l1.tar"), second_layer(work / "l2.tar")):
            run("umoci", "raw", "add-layer", "--image", f"{layout}:layered:1", str(layer))
        run("umoci", "config", "--image", f"{layout}:layered:1", "--config.workingdir",
            "/srv/task", "--config.env", "PATH=/usr/bin:/bin", "--config.user", "root",
            "--config.entrypoint", "/usr/bin/env", "--config.cmd", "python3",
            "--config.cmd", "-c", "--config.cmd", "print('cmd of the image')")
        store.pull(f"oci:{layout}:layered:1", "layered")
        yield Images(root=STORE, debian_tar=deb_tar, layout=layout)
    finally:
        if old is None:
            os.environ.pop("SANDBOX_IMAGE_DIR", None)
        else:
            os.environ["SANDBOX_IMAGE_DIR"] = old
        shutil.rmtree(STORE, ignore_errors=True)


@pytest.fixture(autouse=True)
def image_dir(images: Images, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every image test sees the run's image store (the CLI's children too)."""
    monkeypatch.setenv("SANDBOX_IMAGE_DIR", str(images.root / "store"))
    return images.root / "store"
