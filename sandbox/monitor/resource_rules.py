"""The sampler's decisions: a session's cgroup readings in, resource events out.

Pure but for the clock: `ResourceRules.check` takes one reading (`SessionCgroup.sample`)
and what it remembers of the session (`Readings`), and emits; it reads no file and starts
no thread (the loop that feeds it is `sampler.ResourceSampler`). Tests feed it readings.

`resource.sample` (info), at most every `sample_every` seconds and once more at the end
(`final: true`): the cgroup's counters, with `cpu_percent` averaged over the last
`window_s` seconds (up to 300 s) and `window_s` set to the span it covers, so windowed
guard rules (`mining.cpu_saturation`: 90 % for 300 s) see "sustained" in the evidence
itself. `cpu_percent_now` is the last interval's figure (the live one on the session
row); `mem_bytes` and `pids` are readings now.

`resource.breach`, when a limit is hit (detail `limit`, `reason`, `value`, `max`,
`message`, and `final: true` when found by the last reading; the guard judges it as a
sample with source `resource.breach`):

    reason         limit   severity  when
    oom_kill       memory  alert     the kernel OOM-killed a process of the session
                                     (v1 memory.oom_control oom_kill, v2 memory.events)
                                     - every time the counter rises
    shm            memory  alert     the memory limit was hit (an OOM kill, or v1
                                     failcnt / v2 `max` rising) while tmpfs and shm
                                     pages (/dev/shm, /tmp: memory.stat shmem, which no
                                     reclaim frees) held at least `shm_share` of the
                                     limit - once per episode; also (warning) the
                                     jail's /dev/shm tmpfs itself full
    pids_max       pids    alert     a fork failed at pids.max (v1/v2 pids.events max),
                                     or the group sits at the limit - once per episode
                                     (it ends after `breach_every` s without either)
    cpu_throttled  cpu     warning   the CPU quota was saturated: over the last
                                     `throttle_window_s` seconds the group was runnable
                                     for at least half of it and throttled in at least
                                     `throttle_ratio` of its CFS periods (cpu.stat
                                     nr_throttled / nr_periods) - once per episode; the
                                     next one needs the ratio to fall below half of that
    cpu_saturated  cpu     warning   no quota below the host's cores, and the session
                                     kept `saturation_ratio` of every core busy for
                                     `saturation_window_s` - once per episode (the next
                                     one needs the average to fall below half of that)

The limits part adds the ones no cgroup counter sees (`file_size_limit`,
`output_truncated`, from each finished command). memory.failcnt alone is not a breach:
page-cache reclaim at the limit raises it for benign file I/O. It stays in every sample
(`mem_failcnt`), with `memsw_*` (v1 swap accounting) and `swap_max_hits` (v2).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..events import Emit
from ..jail.cgroup_layout import CFS_PERIOD_US

WINDOW_S = 300.0
"""Span of the cpu_percent average in samples (the mining pack's saturation window)."""
THROTTLE_WINDOW_S = 20.0
"""How long the CPU quota must stay saturated before it is a breach."""
THROTTLE_RATIO = 0.5
"""Share of runnable CFS periods that ran out of quota, over that window."""
SATURATION_WINDOW_S = 20.0
"""How long every core must stay busy (no quota below them) before it is a breach."""
SATURATION_RATIO = 0.8
"""Share of all cores' time the session used over that window."""
SHM_SHARE = 0.4
"""Share of the memory limit held in tmpfs/shm pages that makes a memory hit `shm`."""


@dataclass
class Readings:
    """What the rules remember about one session between readings."""

    sampled: float = -1e18
    breach: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    # (t, cpu_seconds, cpu_periods, cpu_throttled) per reading, oldest first
    history: deque[tuple[float, float, int, int]] = field(default_factory=deque)
    throttled: bool = False  # inside a CPU-quota saturation episode (already reported)
    saturated: bool = False  # inside an all-cores-busy episode (already reported)
    shm_peak: int = 0  # most tmpfs/shm bytes seen since the last memory hit was judged
    shm_full: bool = False  # the jail's /dev/shm tmpfs is full (already reported)


class RulesOptions(TypedDict, total=False):
    """`ResourceRules`' settings as keywords (what `ResourceSampler` passes on)."""

    sample_every: float
    breach_every: float
    window_s: float
    throttle_window_s: float
    throttle_ratio: float
    saturation_window_s: float
    saturation_ratio: float
    shm_share: float
    cpus: int | None
    clock: Callable[[], float]


class ResourceRules:
    """Turns readings into resource.sample (rate-limited) and resource.breach events."""

    def __init__(self, sample_every: float = 5.0, breach_every: float = 5.0, *,
                 window_s: float = WINDOW_S,
                 throttle_window_s: float = THROTTLE_WINDOW_S,
                 throttle_ratio: float = THROTTLE_RATIO,
                 saturation_window_s: float = SATURATION_WINDOW_S,
                 saturation_ratio: float = SATURATION_RATIO,
                 shm_share: float = SHM_SHARE, cpus: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sample_every = sample_every
        self.breach_every = breach_every
        self.window_s = window_s
        self.throttle_window_s = throttle_window_s
        self.throttle_ratio = throttle_ratio
        self.saturation_window_s = saturation_window_s
        self.saturation_ratio = saturation_ratio
        self.shm_share = shm_share
        # The cores the jail can run on (it inherits the supervisor's affinity).
        self.cpus = cpus or len(os.sched_getaffinity(0)) or 1
        self._clock = clock

    # -- one session --------------------------------------------------------------------

    def check(self, s: dict[str, Any], emit: Emit, state: Readings, *,
              final: bool = False) -> None:
        """Judge one reading: emit its breaches, and a sample when one is due (always
        when `final`, the last reading of the session)."""
        now = self._clock()
        last = state.last  # empty at first: every counter is new
        state.last = s
        hist = state.history
        hist.append((now, float(s.get("cpu_seconds", 0.0)), int(s.get("cpu_periods", 0)),
                     int(s.get("cpu_throttled", 0))))
        span = max(self.window_s, self.throttle_window_s, self.saturation_window_s)
        # Keep one reading at or before the longest window's start, so it can be covered.
        while len(hist) > 1 and hist[1][0] <= now - span:
            hist.popleft()
        for severity, detail in self._breaches(s, last, state, now):
            if final:
                detail = {**detail, "final": True,
                          "message": detail["message"] + " (found at the session's end)"}
            emit("resource.breach", detail, severity=severity)
        if final or now - state.sampled >= self.sample_every:
            state.sampled = now
            t0, cpu0, _, _ = self._since(hist, now - self.window_s)
            window = now - t0
            avg = (hist[-1][1] - cpu0) / window * 100 if window > 0 else 0.0
            emit("resource.sample", {
                **s, "cpu_percent_now": s.get("cpu_percent", 0.0),
                "cpu_percent": round(max(0.0, avg), 1), "window_s": round(window, 1),
                **({"final": True} if final else {})})

    @staticmethod
    def _since(hist: deque[tuple[float, float, int, int]], start: float
               ) -> tuple[float, float, int, int]:
        """The newest reading at or before `start` (else the oldest one)."""
        found = hist[0]
        for item in hist:
            if item[0] > start:
                break
            found = item
        return found

    def _breaches(self, s: dict[str, Any], last: dict[str, Any], state: Readings,
                  now: float) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        counters = {k: s.get(k, 0) for k in ("oom_kills", "mem_failcnt", "pids_max_hits")}
        new_ooms = s.get("oom_kills", 0) - last.get("oom_kills", 0)
        if new_ooms > 0:
            mib = s.get("mem_limit", 0) >> 20
            out.append(("alert", {
                "limit": "memory", "reason": "oom_kill",
                "value": s.get("mem_peak", s.get("mem_bytes", 0)),
                "max": s.get("mem_limit", 0), "mem_bytes": s.get("mem_bytes", 0),
                "new_oom_kills": new_ooms, **counters,
                "message": f"memory limit ({mib} MiB) hit: the kernel OOM-killed "
                           f"{new_ooms} process(es) of the session"}))
        hits = s.get("pids_max_hits", 0) > last.get("pids_max_hits", 0)
        at_max = 0 < s.get("pids_limit", 0) <= s.get("pids", 0)
        # One breach per episode: a bomb that keeps hitting the limit is one event; the
        # episode ends after `breach_every` seconds without a new hit or sitting at max.
        quiet = now - state.breach.get("pids", -1e18) >= self.breach_every
        if hits or at_max:
            state.breach["pids"] = now
        if (hits or at_max) and quiet:
            out.append(("alert", {
                "limit": "pids", "reason": "pids_max", "value": s.get("pids", 0),
                "max": s.get("pids_limit", 0), "pids": s.get("pids", 0), **counters,
                "message": f"pids limit ({s.get('pids_limit', 0)}) reached: forks fail "
                           f"(a fork bomb, or too many processes)"}))
        out += self._shm(s, last, state, now, new_ooms, counters)
        quota = float(s.get("cpu_limit_percent", 0))
        cpu = self._throttling(state, now, quota)
        if cpu is not None:
            out.append(("warning", cpu))
        cores = self._saturation(state, now, quota)
        if cores is not None:
            out.append(("warning", cores))
        return out

    def _shm(self, s: dict[str, Any], last: dict[str, Any], state: Readings, now: float,
             new_ooms: int, counters: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """`shm` breaches: a memory hit while tmpfs/shm pages held much of the limit, or
        the jail's /dev/shm tmpfs full. Files there are never reclaimed (no swap) and
        outlive the process killed for them: the limit stays hit until they go."""
        out: list[tuple[str, dict[str, Any]]] = []
        shm = max(int(s.get("shmem_bytes", 0)), int(s.get("dev_shm_bytes", 0)))
        state.shm_peak = max(state.shm_peak, shm)
        limit = int(s.get("mem_limit", 0))
        refused = s.get("mem_failcnt", 0) > last.get("mem_failcnt", 0)
        if limit and (new_ooms > 0 or refused):
            held = state.shm_peak
            state.shm_peak = shm  # judged: the next hit needs its own evidence
            quiet = now - state.breach.get("shm", -1e18) >= self.breach_every
            if held >= limit * self.shm_share:
                state.breach["shm"] = now
                if quiet:
                    mib = limit >> 20
                    out.append(("alert" if new_ooms else "warning", {
                        "limit": "memory", "reason": "shm", "value": held, "max": limit,
                        "shmem_bytes": held,
                        **({"dev_shm_bytes": s["dev_shm_bytes"]} if "dev_shm_bytes" in s
                           else {}),
                        "new_oom_kills": new_ooms, **counters,
                        "message": f"memory limit ({mib} MiB) hit with {held >> 20} MiB in "
                                   f"/dev/shm or another tmpfs (/tmp, a fresh workspace): "
                                   f"files there are not reclaimed and hold the memory "
                                   f"until they are deleted"
                                   + (f"; {new_ooms} process(es) OOM-killed"
                                      if new_ooms else "")}))
        size = int(s.get("dev_shm_size", 0))
        used = int(s.get("dev_shm_bytes", 0))
        full = size > 0 and used >= size * 0.98
        if full and not state.shm_full:
            out.append(("warning", {
                "limit": "shm", "reason": "shm", "value": used, "max": size,
                "dev_shm_bytes": used,
                "message": f"/dev/shm full: {used >> 20} of {size >> 20} MiB (the jail's "
                           f"private /dev tmpfs)"}))
        if full:
            state.shm_full = True
        elif used < size * 0.9:
            state.shm_full = False  # emptied: the next fill is reported
        return out

    def _saturation(self, state: Readings, now: float, quota: float) -> dict[str, Any] | None:
        """A cpu_saturated breach when an all-cores-busy episode starts, else None. With a
        quota below the host's cores the quota binds first: `_throttling` reports it."""
        ceiling = self.cpus * 100.0
        if 0 < quota < ceiling:
            state.saturated = False
            return None
        hist = state.history
        t0, cpu0, _, _ = self._since(hist, now - self.saturation_window_s)
        t1, cpu1, _, _ = hist[-1]
        span = t1 - t0
        avg = (cpu1 - cpu0) / span * 100 if span > 0 else 0.0
        if state.saturated:
            if avg < ceiling * self.saturation_ratio / 2 or span <= 0:
                state.saturated = False  # the episode is over: the next one is reported
            return None
        if span < self.saturation_window_s * 0.95 or avg < ceiling * self.saturation_ratio:
            return None
        state.saturated = True
        return {
            "limit": "cpu", "reason": "cpu_saturated", "value": round(avg, 1),
            "max": ceiling, "cpu_percent": round(avg, 1), "window_s": round(span, 1),
            "cpus": self.cpus,
            "message": f"every core busy for {span:.0f}s: the session used {avg:.0f}% of "
                       f"{self.cpus} core(s) ({ceiling:g}%), and no quota held it"}

    def _throttling(self, state: Readings, now: float, quota: float) -> dict[str, Any] | None:
        """A cpu_throttled breach when a saturation episode starts, else None."""
        hist = state.history
        t0, cpu0, periods0, throttled0 = self._since(hist, now - self.throttle_window_s)
        t1, cpu1, periods1, throttled1 = hist[-1]
        span = t1 - t0
        periods = periods1 - periods0
        ratio = (throttled1 - throttled0) / periods if periods > 0 else 0.0
        if state.throttled:
            if ratio < self.throttle_ratio / 2 or span <= 0:
                state.throttled = False  # the episode is over: the next one is reported
            return None
        runnable_s = periods * CFS_PERIOD_US / 1e6
        if (span < self.throttle_window_s * 0.95 or runnable_s < span / 2
                or ratio < self.throttle_ratio):
            return None
        state.throttled = True
        avg = (cpu1 - cpu0) / span * 100
        return {
            "limit": "cpu", "reason": "cpu_throttled", "value": round(avg, 1), "max": quota,
            "cpu_percent": round(avg, 1), "window_s": round(span, 1),
            "periods": periods, "throttled_periods": throttled1 - throttled0,
            "throttled_ratio": round(ratio, 3),
            "message": f"CPU quota ({quota:g}% of a core) saturated for {span:.0f}s: throttled in "
                       f"{ratio:.0%} of {periods} periods (average {avg:.0f}% of a core)"}
