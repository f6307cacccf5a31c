"""Which session a GPU process belongs to, and what each session uses per device.

NVML reports host PIDs; a PID belongs to a session when the session's root PID is among
its ancestors (so children and grandchildren map), or it is one of the session's
`extra_pids` (e.g. what the process monitor saw escape by double fork). Once attributed,
a PID stays with its session while NVML keeps listing it. PIDs that no longer exist (or
are zombies) are ignored: NVML lists a killed process for a moment after it died.

Reads /proc only; no NVML, no events (`monitor` polls, `quota` decides).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..jail.profile import GpuSection
from .backend import GpuProcess

_MAX_DEPTH = 128  # ancestor walk bound; real trees are a dozen deep

Readings = dict[int, tuple[list[GpuProcess], dict[int, int], int]]
"""device -> (live processes, sm util per pid, device util), from one poll."""


@dataclass(frozen=True)
class SessionGpu:
    """What the monitor needs to know about one live session."""

    root_pid: int
    section: GpuSection | None = None
    granted: tuple[int, ...] = ()
    """Indices of the granted devices (`Grant.indices`)."""
    extra_pids: frozenset[int] = frozenset()


SessionEntry = SessionGpu | tuple[int, GpuSection | None, Sequence[int]]
SessionsProvider = Callable[[], Mapping[str, SessionEntry]]


@dataclass(frozen=True)
class DeviceUsage:
    """One session's use of one GPU at one poll."""

    mem_bytes: int
    util: int
    pids: tuple[int, ...]


@dataclass(frozen=True)
class SessionUsage:
    """One session's GPU use at the last poll (for `ls`, `show` and API results)."""

    at: float
    devices: dict[int, DeviceUsage] = field(default_factory=dict)

    @property
    def mem_bytes(self) -> int:
        return sum(d.mem_bytes for d in self.devices.values())

    @property
    def util(self) -> int:
        """The busiest device's utilisation (a miner saturates one GPU, not the mean)."""
        return max((d.util for d in self.devices.values()), default=0)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    if len(rest) < 2:
        return None
    return rest[0].decode(), int(rest[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def normalise(entry: SessionEntry) -> SessionGpu:
    if isinstance(entry, SessionGpu):
        return entry
    root, section, granted = entry
    return SessionGpu(root_pid=root, section=section, granted=tuple(granted))


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(512).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Attribution:
    """Maps each poll's GPU processes to sessions, remembering PIDs it has attributed."""

    def __init__(self) -> None:
        self._sticky: dict[int, str] = {}  # pid -> session, while NVML lists the pid

    def forget(self, session_id: str) -> None:
        """A finished session's PIDs are no longer its own (they become orphans)."""
        self._sticky = {p: s for p, s in self._sticky.items() if s != session_id}

    def _owner(self, pid: int, roots: dict[int, str], extra: dict[int, str]) -> str | None:
        if pid in self._sticky:
            return self._sticky[pid]
        cur = pid
        for _ in range(_MAX_DEPTH):
            if cur in roots:
                return roots[cur]
            if cur in extra:
                return extra[cur]
            st = _stat(cur)
            if st is None or st[1] <= 0:
                return None
            cur = st[1]
        return None

    def attribute(self, readings: Readings, sessions: Mapping[str, SessionGpu]
                  ) -> tuple[dict[str, dict[int, DeviceUsage]], list[dict[str, Any]]]:
        """(session -> device -> usage, orphans as gpu.orphan details) for one poll."""
        roots = {s.root_pid: sid for sid, s in sessions.items()}
        extra = {p: sid for sid, s in sessions.items() for p in s.extra_pids}
        listed: set[int] = set()
        used: dict[str, dict[int, DeviceUsage]] = {}
        orphans: list[dict[str, Any]] = []
        for dev, (procs, per_pid, dev_util) in readings.items():
            owners: dict[int, str | None] = {}
            former: dict[int, str] = {}
            for p in procs:
                listed.add(p.pid)
                owner = self._owner(p.pid, roots, extra)
                if owner is not None and owner not in sessions:
                    former[p.pid] = owner
                    owner = None  # its session ended, yet it lives on the GPU: an escapee
                owners[p.pid] = owner
                if owner is not None:
                    self._sticky[p.pid] = owner
            by_session: dict[str, list[GpuProcess]] = {}
            for p in procs:
                o = owners[p.pid]
                if o is None:
                    orphan = {"gpu": str(dev), "pid": p.pid, "mem_bytes": p.used_memory,
                              "util": per_pid.get(p.pid, 0), "cmdline": _process_name(p.pid)}
                    if p.pid in former:
                        orphan["was_session"] = former[p.pid]
                    orphans.append(orphan)
                else:
                    by_session.setdefault(o, []).append(p)
            for sid, ps in by_session.items():
                util = sum(per_pid.get(p.pid, 0) for p in ps)
                if not per_pid and len(by_session) == 1 and not any(
                        o is None for o in owners.values()):
                    util = dev_util  # no per-process samples: the device is all theirs
                used.setdefault(sid, {})[dev] = DeviceUsage(
                    mem_bytes=sum(p.used_memory for p in ps), util=min(100, util),
                    pids=tuple(sorted(p.pid for p in ps)))
        self._sticky = {p: s for p, s in self._sticky.items() if p in listed}
        return used, orphans
