"""Small helpers over /proc: a process's tree, what it runs, and whether it is still itself.

Everything here reads procfs directly (no psutil objects): the process monitor calls
`info()` right after an exec event, before a short-lived process vanishes, so each call
is a handful of small reads. Every function tolerates a process that dies mid-read.

Pids are reused; a pid plus `pid_start_time(pid)` names one process for its whole life,
so liveness checks and kills in other modules take both (`is_alive(pid, start)`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

PROC = "/proc"
ARGV_CAP = 16384
"""Bytes of argv kept per exec (head and tail; the middle is cut and marked). An exec
may carry megabytes of arguments; reading, storing and judging them all would let one
process stall the monitor for every session."""


@dataclass(frozen=True)
class ProcInfo:
    """What one process is running, as seen from outside the sandbox."""

    pid: int
    ppid: int
    argv: list[str] = field(default_factory=list)
    """From /proc/<pid>/cmdline; empty for kernel threads, zombies and vanished processes."""
    exe: str = ""
    """Resolved /proc/<pid>/exe; empty when unreadable (gone, or another mount namespace)."""
    comm: str = ""
    """The kernel's 15-byte task name: survives when argv is already gone."""
    uid: int = -1
    """Real uid as the host sees it; -1 when unknown."""
    start: str = ""
    """`pid_start_time`: with `pid`, names this process even after the pid is reused."""
    argv_bytes: int = 0
    """Size of the whole argv in bytes (NULs included), as the kernel has it."""
    argv_truncated: bool = False
    """True when argv was over `ARGV_CAP`: `argv` is its head and tail around a marker."""

    def detail(self) -> dict[str, Any]:
        """The `proc.exec` event detail (JSON-able); `argv_truncated` and `argv_bytes`
        only when argv was cut, `argv_unknown` when it could not be read (the process
        was gone: it lived shorter than the monitor's reaction time)."""
        out = asdict(self)
        if not self.argv_truncated:
            del out["argv_truncated"], out["argv_bytes"]
        if not self.argv:  # gone before it could be read: say so, do not look empty
            out["argv_unknown"] = True
        return out


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    """(comm, fields after comm) of /proc/<pid>/stat; comm may contain spaces and ')'."""
    try:
        raw = _read(f"{PROC}/{pid}/stat").decode("utf-8", "replace")
    except OSError:
        return None
    head, sep, rest = raw.rpartition(")")
    if not sep:
        return None
    comm = head.partition("(")[2]
    return comm, rest.split()


def ppid_of(pid: int) -> int:
    """The parent pid, or -1 when the process is gone."""
    st = _stat_fields(pid)
    if st is None or len(st[1]) < 2:
        return -1
    return int(st[1][1])


def pid_start_time(pid: int) -> str:
    """Start time in clock ticks since boot (stat field 22); '' when the process is gone."""
    st = _stat_fields(pid)
    if st is None or len(st[1]) < 20:
        return ""
    return st[1][19]


def is_alive(pid: int, start: str) -> bool:
    """True when `pid` exists, is not a zombie, and is the process that had `start`."""
    st = _stat_fields(pid)
    if st is None or len(st[1]) < 20 or not start:
        return False
    return st[1][0] not in ("Z", "X") and st[1][19] == start


def info_stat(pid: int) -> tuple[str, str, int] | None:
    """(start, comm, ppid) of a live, non-zombie `pid`; None when gone. One read."""
    st = _stat_fields(pid)
    if st is None or len(st[1]) < 20 or st[1][0] in ("Z", "X"):
        return None
    return st[1][19], st[0], int(st[1][1])


def argv_of(pid: int) -> list[str]:
    """argv, cut to `ARGV_CAP` bytes (see `read_argv`)."""
    return read_argv(pid)[0]


def _split(raw: bytes) -> list[str]:
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [a.decode("utf-8", "replace") for a in parts]


def _argv_size(pid: int) -> int:
    """arg_end - arg_start (stat fields 48, 49): the size of argv; 0 when unknown."""
    st = _stat_fields(pid)
    try:
        return int(st[1][46]) - int(st[1][45]) if st else 0
    except (IndexError, ValueError):
        return 0


def read_argv(pid: int, cap: int = ARGV_CAP) -> tuple[list[str], int, bool]:
    """(argv, size in bytes, truncated) with at most `cap` bytes read from /proc.

    Over the cap, argv is the first and last `cap // 2` bytes with a marker element
    between (`...[N bytes cut]...`); the arguments at the cut are partial. The common
    case is one open and one read: the process may be about to exit.
    """
    try:
        fd = os.open(f"{PROC}/{pid}/cmdline", os.O_RDONLY)
    except OSError:
        return [], 0, False
    try:
        head = os.read(fd, cap + 1)
        if len(head) <= cap:
            return _split(head), len(head), False
        half = cap // 2
        head = head[:cap - half]
        total = _argv_size(pid)
        size = max(total, cap + 1)
        tail = os.pread(fd, half, max(len(head), total - half)) if total > cap else b""
    except OSError:
        return [], 0, False
    finally:
        os.close(fd)
    cut = size - len(head) - len(tail)
    return [*_split(head + b"\0"), f"...[{cut} bytes cut]...", *_split(tail)], size, True


def uid_of(pid: int) -> int:
    """The real uid (first of the `Uid:` line of /proc/<pid>/status); -1 when gone."""
    try:
        raw = _read(f"{PROC}/{pid}/status")
        at = raw.index(b"\nUid:") + 5
        return int(raw[at:raw.index(b"\t", at + 1)])
    except (OSError, ValueError):
        return -1


def info(pid: int, comm: str = "") -> ProcInfo:
    """Everything readable about `pid` now; `comm` is the fallback when it is already gone.

    argv first: it is what a short-lived process loses first (at exit), and what rules
    need most."""
    argv, size, cut = read_argv(pid)
    try:
        exe = os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        exe = ""
    st = _stat_fields(pid)
    if st is None:
        return ProcInfo(pid=pid, ppid=-1, argv=argv, exe=exe, comm=comm, argv_bytes=size,
                        argv_truncated=cut)
    fields = st[1]
    return ProcInfo(
        pid=pid, ppid=int(fields[1]) if len(fields) > 1 else -1, argv=argv, exe=exe,
        comm=st[0] or comm, uid=uid_of(pid), start=fields[19] if len(fields) > 19 else "",
        argv_bytes=size, argv_truncated=cut,
    )


def children(pid: int) -> list[int]:
    """Direct children of `pid` (of all its threads), from /proc/<pid>/task/*/children."""
    out: list[int] = []
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out.extend(int(c) for c in _read(f"{PROC}/{pid}/task/{tid}/children").split())
        except OSError:
            continue
    return out


def _has_children_files() -> bool:
    return os.path.exists(f"{PROC}/self/task/{os.getpid()}/children")


def _ppid_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir(PROC):
        if name.isdigit():
            ppid = ppid_of(int(name))
            if ppid >= 0:
                tree.setdefault(ppid, []).append(int(name))
    return tree


def descendants(root_pid: int) -> list[int]:
    """Every live descendant of `root_pid` (not the root), parents before children.

    Uses the kernel's children lists (CONFIG_PROC_CHILDREN) and falls back to a scan of
    every process's ppid. Orphans re-parented away from the tree (double fork) are not
    descendants any more: the cgroup or the process monitor's fork events find those.
    """
    if _has_children_files():
        def kids(p: int) -> list[int]:
            return children(p)
    else:
        tree = _ppid_map()

        def kids(p: int) -> list[int]:
            return tree.get(p, [])

    out: list[int] = []
    seen = {root_pid}
    queue = [root_pid]
    while queue:
        for child in kids(queue.pop(0)):
            if child not in seen:
                seen.add(child)
                out.append(child)
                queue.append(child)
    return out


def comm_of(pid: int) -> str:
    """The process's name (/proc/<pid>/comm, 15 bytes at most); "" when it is gone."""
    try:
        return _read(f"{PROC}/{pid}/comm").decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return ""


def named_descendants(root_pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every live descendant of `root_pid`, parents first. What psutil's
    `children(recursive=True)` gives, without its read of every process's stat on the
    host (with 256 sandboxes alive, each start's look for its bash read ~1000 files)."""
    return [(p, comm_of(p)) for p in descendants(root_pid)]


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(root_pid: int, sig: int = signal.SIGKILL, *, rounds: int = 5,
              start: str = "") -> list[int]:
    """Signal `root_pid` and all its descendants; returns the pids signalled.

    For SIGKILL the tree is first stopped (SIGSTOP) so nothing forks between listing
    and killing, then listed again for a few bounded rounds to catch stragglers. When
    `start` is given and the root is no longer that process, nothing is signalled.
    """
    if start and not is_alive(root_pid, start):
        return []
    signalled: list[int] = []
    for _ in range(rounds):
        tree = [p for p in [root_pid, *descendants(root_pid)] if _running(p)]
        if not tree:
            break
        if sig == signal.SIGKILL:
            _signal_all(tree, signal.SIGSTOP)
            tree = [p for p in [root_pid, *descendants(root_pid)] if _running(p)]
        _signal_all(tree, sig)
        signalled.extend(p for p in tree if p not in signalled)
        if sig != signal.SIGKILL:
            break
        time.sleep(0.01)
    return signalled


def _running(pid: int) -> bool:
    st = _stat_fields(pid)
    return st is not None and bool(st[1]) and st[1][0] not in ("Z", "X")
