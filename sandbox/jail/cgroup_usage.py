"""A session group's counters: what its cgroup files say, read the same way on v1 and v2.

`read(version, dirs)` turns one reading of the group's files into `Counters`;
`SessionCgroup.sample` adds what needs memory between readings (CPU percent since the
last one) and the jail's /dev/shm. `memory_watch` opens the descriptors that wake the
sampler when memory nears its limit. Pure reads: nothing here writes a limit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cgroup_layout import read_int, read_keyed, read_text, write

_NO_LIMIT = 1 << 60  # v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages)


@dataclass(frozen=True)
class Counters:
    """One reading of a group's memory and CPU files (pids are read by the caller)."""

    usage_ns: int  # CPU time so far
    mem: int
    peak: int
    mem_max: int
    oom_kills: int
    failcnt: int
    throttled_s: float
    quota_us: str
    period: str
    cpu_stat: dict[str, int]
    mem_stat: dict[str, int]
    swap: dict[str, int]

    @property
    def cpu_limit_percent(self) -> float:
        """The CPU quota in percent of a core; 0 = no quota."""
        with contextlib.suppress(ValueError, ZeroDivisionError):
            if self.quota_us.strip() not in ("", "max", "-1"):
                return int(self.quota_us) / int(self.period) * 100
        return 0.0


def read(version: int, dirs: dict[str, Path]) -> Counters:
    """The group's counters now (`dirs` as `SessionCgroup.dirs`)."""
    return _read_v2(dirs[""]) if version == 2 else _read_v1(dirs)


def cpu_ns(version: int, dirs: dict[str, Path]) -> int:
    """The group's CPU time so far, one file read: whether anything ran since a look."""
    if version == 2:
        return read_keyed(dirs[""] / "cpu.stat").get("usage_usec", 0) * 1000
    return read_int(dirs["cpuacct"] / "cpuacct.usage")


def _read_v2(d: Path) -> Counters:
    cpu_stat = read_keyed(d / "cpu.stat")
    events = read_keyed(d / "memory.events")
    mem = read_int(d / "memory.current")
    quota_us, _, period = read_text(d / "cpu.max").partition(" ")
    return Counters(
        usage_ns=cpu_stat.get("usage_usec", 0) * 1000,
        mem=mem,
        peak=read_int(d / "memory.peak", mem),
        mem_max=read_int(d / "memory.max"),
        oom_kills=events.get("oom_kill", 0),
        failcnt=events.get("max", 0),
        throttled_s=cpu_stat.get("throttled_usec", 0) / 1e6,
        quota_us=quota_us,
        period=period,
        cpu_stat=cpu_stat,
        mem_stat=read_keyed(d / "memory.stat"),
        # swap.max is 0 (see SessionCgroup._limit): a "max" event is a charge refused at it
        swap={"swap_max_hits": read_keyed(d / "memory.swap.events").get("max", 0)},
    )


def _read_v1(dirs: dict[str, Path]) -> Counters:
    md = dirs["memory"]
    mem = read_int(md / "memory.usage_in_bytes")
    cpu_stat = read_keyed(dirs["cpu"] / "cpu.stat")
    swap = {}
    if (md / "memory.memsw.failcnt").exists():  # swap accounting is on
        memsw_max = read_int(md / "memory.memsw.limit_in_bytes")
        swap = {"memsw_bytes": read_int(md / "memory.memsw.usage_in_bytes"),
                "memsw_peak": read_int(md / "memory.memsw.max_usage_in_bytes"),
                "memsw_limit": memsw_max if memsw_max < _NO_LIMIT else 0,
                "memsw_failcnt": read_int(md / "memory.memsw.failcnt")}
    return Counters(
        usage_ns=read_int(dirs["cpuacct"] / "cpuacct.usage"),
        mem=mem,
        peak=read_int(md / "memory.max_usage_in_bytes", mem),
        mem_max=read_int(md / "memory.limit_in_bytes"),
        oom_kills=read_keyed(md / "memory.oom_control").get("oom_kill", 0),
        failcnt=read_int(md / "memory.failcnt"),
        throttled_s=cpu_stat.get("throttled_time", 0) / 1e9,
        quota_us=read_text(dirs["cpu"] / "cpu.cfs_quota_us"),
        period=read_text(dirs["cpu"] / "cpu.cfs_period_us"),
        cpu_stat=cpu_stat,
        mem_stat=read_keyed(md / "memory.stat"),
        swap=swap,
    )


def as_sample(c: Counters, cpu_percent: float, pids_dir: Path,
              dev_shm: dict[str, int]) -> dict[str, Any]:
    """The `resource.sample` fields of one reading (see `SessionCgroup.sample`)."""
    return {
        "cpu_percent": round(cpu_percent, 1),
        "cpu_seconds": round(c.usage_ns / 1e9, 3),
        "mem_bytes": c.mem,
        "mem_peak": c.peak,
        "mem_limit": c.mem_max if c.mem_max < _NO_LIMIT else 0,
        "pids": read_int(pids_dir / "pids.current"),
        "pids_limit": read_int(pids_dir / "pids.max"),
        "pids_max_hits": read_keyed(pids_dir / "pids.events").get("max", 0),
        "oom_kills": c.oom_kills,
        "mem_failcnt": c.failcnt,
        **c.swap,
        # tmpfs and shm pages charged to the group: not reclaimable without swap, so
        # files in /dev/shm or /tmp hold their memory until the jail ends.
        "shmem_bytes": c.mem_stat.get("shmem", 0),
        **dev_shm,
        # CFS bandwidth: periods the group was runnable, and those it hit its quota in.
        "cpu_periods": c.cpu_stat.get("nr_periods", 0),
        "cpu_throttled": c.cpu_stat.get("nr_throttled", 0),
        "cpu_throttled_s": round(c.throttled_s, 3),
        "cpu_limit_percent": round(c.cpu_limit_percent, 1),  # 0 = no quota
    }


def memory_watch(version: int, dirs: dict[str, Path], fractions: Sequence[float],
                 oom: bool = True) -> list[int]:
    """File descriptors that wake a poller when the group's memory nears its limit or
    it goes out of memory, so a sample is taken then, while the jail still lives
    (what fills memory can end the session in well under a sampling interval, and
    its tmpfs files go with the jail's mount namespace). Caller closes them.

    v1: eventfds on cgroup.event_control: every OOM (memory.oom_control), and usage
    crossing each of `fractions` of the limit. v2: memory.events itself (POLLPRI
    when a counter changes: `max` when usage hits the limit, then `oom_kill`).
    `oom=False`: the thresholds only (v2: nothing)."""
    fds: list[int] = []
    try:
        if version == 2:
            if oom:
                fds.append(os.open(dirs[""] / "memory.events", os.O_RDONLY | os.O_CLOEXEC))
            return fds
        md = dirs["memory"]
        limit = read_int(md / "memory.limit_in_bytes")
        targets = [("memory.oom_control", "")] if oom else []
        if 0 < limit < _NO_LIMIT:
            targets += [("memory.usage_in_bytes", f" {int(limit * f)}") for f in fractions]
        for name, arg in targets:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            fds.append(efd)
            cfd = os.open(md / name, os.O_RDONLY | os.O_CLOEXEC)
            try:  # the registration keeps its own reference: cfd may close
                write(md / "cgroup.event_control", f"{efd} {cfd}{arg}")
            finally:
                os.close(cfd)
    except OSError:
        for fd in fds:
            os.close(fd)
        return []
    return fds
