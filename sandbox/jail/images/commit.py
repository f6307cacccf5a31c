"""`sandbox image commit ID NAME`: a kept sandbox's upper layer as a new image.

The upper directory is overlayfs's own record of what changed: new and changed files as
they are, a deleted file as a 0/0 character device, a replaced directory marked opaque
(`trusted.overlay.opaque`). An OCI layer says the same with `.wh.NAME` and `.wh..wh..opq`
entries, so the layer is the upper, translated entry by entry, on top of the session's
image. What the supervisor put there for that session alone (the agent's account, bind
targets) is left out. The sandbox has ended, so nothing writes the upper meanwhile; its
links are stored as links (the walk never follows one).
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import SetupError
from . import rootfs
from .store import Image, ImageStore

_OPAQUE = "trusted.overlay.opaque"


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def layer_members(upper: Path, skip: set[str]) -> list[tuple[str, str | None]]:
    """(name in the layer, path in the upper or None for a whiteout), parents first."""
    out: list[tuple[str, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(upper):  # os.walk never follows links
        rel_dir = os.path.relpath(dirpath, upper)
        dirnames.sort()
        if rel_dir != "." and _opaque(dirpath):
            out.append((f"{rel_dir}/.wh..wh..opq", None))
        for name in sorted(filenames) + [d for d in dirnames
                                          if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if "/" + rel in skip:
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                parent, _, base = rel.rpartition("/")
                out.append((f"{parent}/.wh.{base}" if parent else f".wh.{base}", None))
            else:
                out.append((rel, full))
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                out.append((os.path.normpath(os.path.join(rel_dir, d)), full))
    return out


def write_layer(upper: Path, skip: set[str], dest: Path) -> int:
    """The upper as an OCI layer tarball at `dest`; returns the number of entries."""
    members = layer_members(upper, skip)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in members:
            if path is None:
                info = tarfile.TarInfo(name)
                info.size = 0
                tar.addfile(info)
            else:
                info = tar.gettarinfo(path, arcname=name)
                if info.isfile():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return len(members)


def commit(row: Mapping[str, Any], ended: bool, images: ImageStore, name: str) -> Image:
    """A kept session's upper layer (`row`: its record; `ended`: it is over) as image
    `name`, derived from the image it ran in."""
    res: dict[str, Any] = (row.get("resources") or {}).get("image_root") or {}
    if not res:
        raise SetupError(f"session {row['id']} did not run in an image")
    if not res.get("keep"):
        raise SetupError(f"session {row['id']} was not kept: start it with --keep "
                         "(API: keep=True) to commit its layer")
    if not ended:
        raise SetupError(f"session {row['id']} is still {row['state']}: close it first")
    upper = Path(res["base"]) / "upper"
    if not upper.is_dir():
        raise SetupError(f"session {row['id']}: its kept layer {upper} is gone")
    base = images.resolve(str(res["digest"]))
    skip = set(res.get("injected") or [])
    with tempfile.TemporaryDirectory(dir=images.root) as tmp:
        layer = Path(tmp) / "layer.tar"
        write_layer(upper, skip, layer)
        image = images.derive(base, layer, name, f"commit:{row['id']}")
    rootfs.cleanup({**res, "keep": False})  # committed: the kept upper has done its job
    return image
