"""One cgroup per session: CPU, memory and pids limits, usage samples, and a sure kill.

Layout: `<mount>/sandbox/<session_id>`. With cgroup v2 (when the v2 hierarchy has the
memory, cpu and pids controllers) that is one directory; on hybrid or v1-only hosts it is
one directory in each v1 hierarchy we use:

    memory   memory.limit_in_bytes (+ memsw), failcnt, oom_control's oom_kill counter,
             memory.stat shmem (tmpfs and shm pages: /dev/shm, /tmp, a fresh workspace)
    cpu      cpu.cfs_quota_us / cpu.cfs_period_us, cpu.stat (nr_periods, nr_throttled)
    cpuacct  cpuacct.usage (CPU time, for cpu_percent)
    pids     pids.max, pids.current, pids.events
    freezer  freezer.state: stop everything before killing, so a fork bomb cannot outrun it

The jail joins the group before it execs (`enter_current_process` in a preexec_fn), so
every process it ever starts, including double-forked daemons that leave its process
tree, stays in the group: `kill()` ends them all and `pids()` still finds them.

Groups live at the root of each hierarchy, not under the supervisor's own group, so a
`sandbox gc` started from any shell finds them (`leftovers`). `resources` is what the
session stores for crash cleanup; `cleanup(resources)` removes it from any process.

Finding the hierarchies (`detect`, `available`) and the file helpers are in
`cgroup_layout`; reading the counters into a sample is `cgroup_usage`. This module is
the group's life: create, limit, join, observe, freeze, kill, remove.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SetupError
from . import cgroup_layout, cgroup_usage
from .cgroup_layout import (
    CFS_PERIOD_US,
    FIX,
    PARENT,
    SESSION_ID,
    V2_CONTROLLERS,
    Layout,
    available,
    detect,
    read_keyed,
    write,
)
from .launch import join_cgroup
from .profile import LimitsSection


def pids_max(limits: LimitsSection) -> int:
    """The group's pids.max: `pids`, but never above `processes` (0 = no limit).

    RLIMIT_NPROC (`processes`) counts the agent user's tasks and fails a fork with the
    same EAGAIN, but leaves no counter anywhere: with `processes` below `pids` (strict:
    128 < 256, default: 512 < 1024) a fork bomb was held by the rlimit and the session
    recorded nothing. With pids.max below `processes` the cgroup limit binds first (the
    group's tasks are all the agent's, firejail's included, and the kernel checks the
    rlimit before the pids controller, so equal limits would leave it to the rlimit),
    and pids.events `max` counts every fork it failed, readable after the session's
    last process is gone."""
    caps = [n for n in (limits.pids, limits.processes - 1 if limits.processes > 1 else 0)
            if n > 0]
    return min(caps) if caps else 0


class SessionCgroup:
    """A session's cgroup (v2: one dir; v1: one dir per controller)."""

    def __init__(self, session_id: str, version: int, dirs: dict[str, Path]) -> None:
        self.session_id = session_id
        self.version = version
        self.dirs = dirs
        self.rel_path = f"/{PARENT}/{session_id}"
        """The path /proc/<pid>/cgroup shows for members (in every hierarchy)."""
        # Precomputed so the preexec_fn does nothing but open/write/close.
        self._procs_files = [os.fsencode(d / "cgroup.procs")
                             for d in dict.fromkeys(self.dirs.values())]
        # What the forked child writes "0" to. v1: `tasks`, the calling thread alone. The
        # kernel moves `current` by itself without the global threadgroup rwsem, whose
        # write side waits an RCU grace period (cgroup.procs: ~5 ms per hierarchy write,
        # on every start and every joined exec; `tasks`: 0.05 ms, measured here). A
        # preexec_fn runs in a fresh fork, whose only thread is the caller, so the thread
        # is the whole process, and everything it execs and forks inherits the group. v2
        # has no thread-granular move for a domain group: cgroup.procs.
        self.enter_files = [os.fsencode(d / ("cgroup.procs" if version == 2 else "tasks"))
                             for d in dict.fromkeys(self.dirs.values())]
        self._last_cpu: tuple[float, int] | None = None
        self._member: int | None = None  # a member in the jail's mount namespace

    # -- create / join ------------------------------------------------------------------

    @classmethod
    def create(cls, session_id: str, limits: LimitsSection) -> SessionCgroup:
        """Make `sandbox/<session_id>` with the profile's limits; SetupError when impossible."""
        if not SESSION_ID.match(session_id):
            raise SetupError(f"session id {session_id!r} cannot name a cgroup")
        layout = cgroup_layout.cached()
        ok, reason = available(layout)
        if not ok or layout is None:
            raise SetupError(reason)
        dirs = {c: m / PARENT / session_id for c, m in layout.mounts.items()}
        group = cls(session_id, layout.version, dirs)
        try:
            group._make(layout)
            group._limit(limits)
        except OSError as e:
            group.remove()
            raise SetupError(f"cannot set up cgroup {group.rel_path}: {e}; {FIX}") from e
        return group

    def _make(self, layout: Layout) -> None:
        if self.version == 2:
            root = layout.mounts[""]
            want = " ".join(f"+{c}" for c in V2_CONTROLLERS)
            write(root / "cgroup.subtree_control", want)
            (root / PARENT).mkdir(exist_ok=True)
            write(root / PARENT / "cgroup.subtree_control", want)
        for d in dict.fromkeys(self.dirs.values()):
            d.parent.mkdir(exist_ok=True)
            d.mkdir(exist_ok=False)
            if not (d / "cgroup.procs").exists():  # not a cgroup: the layout moved
                cgroup_layout.forget()
                raise OSError(f"{d} is not in a cgroup hierarchy (were the hierarchies "
                              "remounted? the next start looks again)")

    def _limit(self, limits: LimitsSection) -> None:
        mem = limits.memory_mib << 20 if limits.memory_mib > 0 else 0
        quota = limits.cpu_percent * CFS_PERIOD_US // 100 if limits.cpu_percent > 0 else 0
        pids = str(pids_max(limits)) if pids_max(limits) > 0 else "max"
        if self.version == 2:
            d = self.dirs[""]
            if mem:
                write(d / "memory.max", str(mem))
                if (d / "memory.swap.max").exists():
                    write(d / "memory.swap.max", "0")  # swap would make the limit soft
            write(d / "cpu.max", f"{quota or 'max'} {CFS_PERIOD_US}")
            write(d / "pids.max", pids)
            return
        if mem:
            write(self.dirs["memory"] / "memory.limit_in_bytes", str(mem))
            memsw = self.dirs["memory"] / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # swap accounting on: cap memory+swap too
                write(memsw, str(mem))
        write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota or -1))
        write(self.dirs["pids"] / "pids.max", pids)

    def enter_current_process(self) -> None:
        """Move the calling process into the group. For a preexec_fn only (os calls, and
        a single-threaded fork: in v1 it moves the calling thread).

        Must run before the child drops root. Raises OSError when a write fails, which
        makes the spawn fail (fail closed) rather than run the jail unconfined.
        """
        join_cgroup(self.enter_files)

    def add(self, pid: int) -> None:
        """Move an existing process into the group (every hierarchy)."""
        for path in self._procs_files:
            write(Path(os.fsdecode(path)), str(pid))

    # -- observe ------------------------------------------------------------------------

    def _dir(self, controller: str) -> Path:
        return self.dirs[""] if self.version == 2 else self.dirs[controller]

    def pids(self) -> list[int]:
        """Every process in the group now (any hierarchy would do; pids is always there)."""
        try:
            text = (self._dir("pids") / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs.values())

    def pids_max_hits(self) -> int:
        """Forks the group's pids.max has failed so far (pids.events `max`)."""
        return read_keyed(self._dir("pids") / "pids.events").get("max", 0)

    def dev_shm(self) -> dict[str, int]:
        """The jail's /dev/shm now: {dev_shm_bytes, dev_shm_size}, or {} when no member
        lives in another mount namespace (the jail has not started, or it has ended).

        In the jail /dev/shm is a directory of firejail's private /dev (--private-dev):
        a tmpfs of half the host's RAM, private to the jail and gone with it. What stops
        it filling is RLIMIT_FSIZE per file and, for all of them, the memory cgroup, which
        tmpfs pages are charged to (`shmem_bytes`); its own size binds only without a
        memory limit. Read through /proc/PID/root of a member in the jail's namespace."""
        pid = self._jail_member()
        if pid is None:
            return {}
        try:
            st = os.statvfs(f"/proc/{pid}/root/dev/shm")
        except OSError:
            self._member = None
            return {}
        return {"dev_shm_bytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
                "dev_shm_size": st.f_blocks * st.f_frsize}

    def _jail_member(self) -> int | None:
        """A member whose mount namespace is not ours (cached while it stays a member)."""
        try:
            mine = os.stat("/proc/self/ns/mnt").st_ino
        except OSError:
            return None
        pids = self.pids()
        if self._member in pids:
            return self._member
        self._member = None
        for pid in pids[:64]:  # firejail's sandbox process comes second: no long scan
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}/ns/mnt").st_ino != mine:
                    self._member = pid
                    return pid
        return None

    def memory_watch(self, fractions: Sequence[float], oom: bool = True) -> list[int]:
        """Descriptors that wake the sampler when memory nears the limit (see
        `cgroup_usage.memory_watch`); the caller closes them."""
        return cgroup_usage.memory_watch(self.version, self.dirs, fractions, oom)

    def cpu_ns(self) -> int:
        return cgroup_usage.cpu_ns(self.version, self.dirs)

    def sample(self) -> dict[str, Any]:
        """Usage now: cpu_percent (since the last sample), mem_bytes, pids, limit counters.

        Counters only ever grow: oom_kills (the kernel OOM-killed a member), mem_failcnt
        (usage reached the limit; page-cache reclaim counts too), pids_max_hits (a fork
        failed at pids.max), cpu_periods / cpu_throttled (CFS periods runnable / out of
        quota)."""
        counters = cgroup_usage.read(self.version, self.dirs)
        now = time.monotonic()
        last = self._last_cpu
        self._last_cpu = (now, counters.usage_ns)
        cpu = 0.0
        if last is not None and now > last[0]:
            cpu = max(0.0, (counters.usage_ns - last[1]) / 1e9 / (now - last[0]) * 100)
        return cgroup_usage.as_sample(counters, cpu, self._dir("pids"), self.dev_shm())

    # -- end ----------------------------------------------------------------------------

    def kill(self, timeout: float = 5.0) -> int:
        """SIGKILL every process in the group; returns how many were signalled.

        v2 uses cgroup.kill when the kernel has it. Otherwise the group is frozen first
        (nothing can fork while we list and kill), then thawed so the kills land; the
        loop is bounded by `timeout`.
        """
        deadline = time.monotonic() + timeout
        if self.version == 2 and (self.dirs[""] / "cgroup.kill").exists():
            n = len(self.pids())
            with contextlib.suppress(OSError):
                write(self.dirs[""] / "cgroup.kill", "1")
            self._wait_empty(deadline)
            return n
        killed: set[int] = set()
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                break
            frozen = self._freeze(True, deadline)
            for pid in self.pids() if frozen else pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            if frozen:
                self._freeze(False, deadline)
            self._wait_empty(min(deadline, time.monotonic() + 0.5))
        return len(killed)

    def hold(self, frozen: bool) -> bool:
        """Freeze or thaw the group without waiting for the transition (backpressure:
        the exec monitor holds a session that runs ahead of its recorder)."""
        return self._freeze(frozen, time.monotonic())

    def _freeze(self, frozen: bool, deadline: float) -> bool:
        state = self._freezer_state()
        if state is None:
            return False
        want = "FROZEN" if frozen else "THAWED"
        try:
            if self.version == 2:
                write(self.dirs[""] / "cgroup.freeze", "1" if frozen else "0")
            else:
                write(self.dirs["freezer"] / "freezer.state", want)
        except OSError:
            return False
        while time.monotonic() < deadline:
            if self._freezer_state() == want:
                return True
            time.sleep(0.005)
        return False

    def _freezer_state(self) -> str | None:
        if self.version == 2:
            ev = read_keyed(self.dirs[""] / "cgroup.events")
            if "frozen" not in ev:
                return None
            return "FROZEN" if ev["frozen"] else "THAWED"
        if "freezer" not in self.dirs:
            return None
        try:
            return (self.dirs["freezer"] / "freezer.state").read_text().strip()
        except OSError:
            return None

    def _wait_empty(self, deadline: float) -> bool:
        while self.pids():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def remove(self, *, retries: int = 100) -> None:
        """Kill what is left and remove the directories. Idempotent; bounded retries."""
        if self.pids():
            self.kill()
        for d in dict.fromkeys(self.dirs.values()):
            for _ in range(retries):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last members finish exiting
                    with contextlib.suppress(OSError):
                        if (d / "cgroup.procs").read_text().split():
                            self.kill(timeout=1.0)
                    time.sleep(0.02)
            else:
                raise SetupError(f"cannot remove cgroup {d}: processes are still in it")

    # -- crash cleanup ------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, Any]:
        """JSON-able record for the store: what `cleanup` needs after a crash."""
        return {"session_id": self.session_id, "version": self.version,
                "dirs": {c: str(d) for c, d in self.dirs.items()}}

    @classmethod
    def from_resources(cls, resources: dict[str, Any]) -> SessionCgroup:
        """Rebuild from `resources`, refusing any path that is not one of our groups."""
        sid = str(resources["session_id"])
        layout = detect()
        mounts = {str(m) for m in (layout.mounts.values() if layout else ())}
        dirs: dict[str, Path] = {}
        for c, raw in dict(resources["dirs"]).items():
            d = Path(raw)
            if (d.name != sid or d.parent.name != PARENT or ".." in d.parts
                    or str(d.parent.parent) not in mounts or not SESSION_ID.match(sid)):
                raise SetupError(f"refusing to clean up {raw!r}: not a sandbox cgroup")
            dirs[str(c)] = d
        return cls(sid, int(resources["version"]), dirs)


def cleanup(resources: dict[str, Any]) -> None:
    """Kill and remove a crashed session's cgroup (for gc's cleaner registry)."""
    SessionCgroup.from_resources(resources).remove()


def leftovers(live: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """session_id -> resources of every `sandbox/<id>` group on the host, except `live` ones."""
    layout = detect()
    if layout is None:
        return {}
    skip = set(live)
    found: dict[str, dict[str, Path]] = {}
    for c, mount in layout.mounts.items():
        with contextlib.suppress(OSError):
            for d in (mount / PARENT).iterdir():
                if d.is_dir() and d.name not in skip and SESSION_ID.match(d.name):
                    found.setdefault(d.name, {})[c] = d
    return {sid: SessionCgroup(sid, layout.version, dirs).resources
            for sid, dirs in sorted(found.items())}
