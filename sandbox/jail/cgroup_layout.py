"""Where the cgroup hierarchies are, whether the supervisor can use them, and the small
file reads and writes every group needs.

The lowest layer of the cgroup code: `cgroups` (the session's group) and `cgroup_usage`
(its counters) build on it; it knows nothing of sessions or profiles.

With cgroup v2 (when the v2 hierarchy has the memory, cpu and pids controllers) a group
is one directory; on hybrid or v1-only hosts it is one directory in each v1 hierarchy we
use (`V1_CONTROLLERS`). Every session's group is `<mount>/PARENT/<session_id>`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PARENT = "sandbox"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""What a session id must look like to name a cgroup directory (no `..`, no `/`)."""
FIX = "run the supervisor as root on a host with cgroups (see `sandbox doctor`)"


@dataclass(frozen=True)
class Layout:
    """Where the cgroup hierarchies are mounted: v2 `{"": dir}` or v1 controller -> dir."""

    version: int
    mounts: dict[str, Path] = field(default_factory=dict)


def _mountinfo() -> list[tuple[str, str, list[str]]]:
    """(fstype, mount point, super options) of every cgroup mount."""
    out: list[tuple[str, str, list[str]]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fstype, _source, opts = [*post.split(), "", ""][:3]
        if fstype in ("cgroup", "cgroup2"):
            point = pre.split()[4].replace("\\040", " ")
            out.append((fstype, point, opts.split(",")))
    return out


def detect() -> Layout | None:
    """v2 when a cgroup2 mount has memory, cpu and pids; else the v1 hierarchies; else None."""
    mounts = _mountinfo()
    for fstype, point, _opts in mounts:
        if fstype != "cgroup2":
            continue
        try:
            have = Path(point, "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if all(c in have for c in V2_CONTROLLERS):
            return Layout(2, {"": Path(point)})
    v1 = {c: Path(point) for fstype, point, opts in mounts if fstype == "cgroup"
          for c in opts if c in V1_CONTROLLERS}
    return Layout(1, v1) if v1 else None


_seen: list[Layout] = []


def cached() -> Layout | None:
    """`detect()`, remembered for the process: each read of /proc/self/mountinfo lists
    every mount, a fresh workspace's included (~0.2 ms a read with 256 sandboxes alive,
    twice a start). Hierarchies do not move under a running host; a group made where one
    is no longer mounted has no cgroup.procs, which `SessionCgroup.create` checks and
    then calls `forget` (fail closed: that start fails, the next one detects again)."""
    if not _seen:
        layout = detect()
        if layout is None:
            return None
        _seen.append(layout)
    return _seen[0]


def forget() -> None:
    _seen.clear()


def available(layout: Layout | None = None) -> tuple[bool, str]:
    """(True, what will be used) or (False, what is missing and how to fix it);
    `layout`: one detected already."""
    if os.geteuid() != 0:
        return False, f"cgroup limits need root (running as uid {os.geteuid()}): {FIX}"
    layout = layout or detect()
    if layout is None:
        return False, f"no cgroup hierarchy is mounted: mount cgroup2 at /sys/fs/cgroup; {FIX}"
    if layout.version == 1:
        missing = [c for c in V1_CONTROLLERS if c not in layout.mounts]
        if missing:
            return False, f"cgroup v1 controllers not mounted: {', '.join(missing)}; {FIX}"
    unwritable = [str(p) for p in layout.mounts.values() if not os.access(p, os.W_OK)]
    if unwritable:
        return False, f"cgroup hierarchy read-only: {', '.join(unwritable)}; {FIX}"
    if layout.version == 1:
        return True, "cgroup v1 (" + ", ".join(V1_CONTROLLERS) + ")"
    return True, f"cgroup v2 at {layout.mounts['']}"


def write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _raw(path: Path) -> str:
    """A small kernel file's text: os calls, no pathlib or text-wrapper objects (half the
    cost of `read_text` a file; the sampler reads ~16 per busy session a second)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def read_int(path: Path, default: int = 0) -> int:
    """An integer file; `default` when it is missing, empty or "max" (no limit)."""
    try:
        text = _raw(path).strip()
    except OSError:
        return default
    return default if text in ("", "max") else int(text)


def read_text(path: Path) -> str:
    try:
        return _raw(path).strip()
    except OSError:
        return ""


def read_keyed(path: Path) -> dict[str, int]:
    """'key value' lines (memory.events, pids.events, oom_control, cpu.stat)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _raw(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out
