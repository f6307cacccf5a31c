"""`ResourceSampler`: each session's cgroup usage into the store, and limit breaches.

One thread per process reads every registered session's cgroup every `interval` seconds.

`resource.sample` (info), at most every `sample_every` seconds: the cgroup's counters, with
`cpu_percent` averaged over the last `window_s` seconds (up to 300 s) and `window_s` set
to the span it covers, so windowed guard rules (`mining.cpu_saturation`: 90 % for 300 s)
see "sustained" in the evidence itself. `cpu_percent_now` is the last interval's figure
(the live one on the session row); `mem_bytes` and `pids` are readings now.

`resource.breach`, when a limit is hit (detail `limit`, `reason`, `value`, `max`,
`message`; the guard judges it as a sample with source `resource.breach`):

    reason         limit   severity  when
    oom_kill       memory  alert     the kernel OOM-killed a process of the session
                                     (v1 memory.oom_control oom_kill, v2 memory.events)
                                     - every time the counter rises
    pids_max       pids    alert     a fork failed at pids.max (v1/v2 pids.events max),
                                     or the group sits at the limit - once per episode
                                     (it ends after `breach_every` s without either)
    cpu_throttled  cpu     warning   the CPU quota was saturated: over the last
                                     `throttle_window_s` seconds the group was runnable
                                     for at least half of it and throttled in at least
                                     `throttle_ratio` of its CFS periods (cpu.stat
                                     nr_throttled / nr_periods) - once per episode; the
                                     next one needs the ratio to fall below half of that

memory.failcnt alone is not a breach: page-cache reclaim at the limit raises it for
benign file I/O. It stays in every sample (`mem_failcnt`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cgroups import CFS_PERIOD_US, SessionCgroup
from .events import Emit

WINDOW_S = 300.0
"""Span of the cpu_percent average in samples (the mining pack's saturation window)."""
THROTTLE_WINDOW_S = 60.0
"""How long the CPU quota must stay saturated before it is a breach."""
THROTTLE_RATIO = 0.5
"""Share of runnable CFS periods that ran out of quota, over that window."""

log = logging.getLogger("sandbox")


@dataclass
class _State:
    """What the sampler remembers about one session between ticks."""

    sampled: float = -1e18
    breach: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)
    # (t, cpu_seconds, cpu_periods, cpu_throttled) per tick, oldest first
    history: deque[tuple[float, float, int, int]] = field(default_factory=deque)
    throttled: bool = False  # inside a CPU-saturation episode (already reported)


class ResourceSampler:
    """Samples each session's cgroup; emits resource.sample and resource.breach."""

    def __init__(self, interval: float = 1.0, sample_every: float = 5.0,
                 breach_every: float = 5.0, *, window_s: float = WINDOW_S,
                 throttle_window_s: float = THROTTLE_WINDOW_S,
                 throttle_ratio: float = THROTTLE_RATIO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.sample_every = sample_every
        self.breach_every = breach_every
        self.window_s = window_s
        self.throttle_window_s = throttle_window_s
        self.throttle_ratio = throttle_ratio
        self._clock = clock
        self._groups: dict[str, tuple[SessionCgroup, Emit, _State]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, session_id: str, cgroup: SessionCgroup, emit: Emit) -> None:
        with self._lock:
            self._groups[session_id] = (cgroup, emit, _State())
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-resources",
                                            daemon=True)
            self._thread.start()

    def remove(self, session_id: str) -> None:
        with self._lock:
            self._groups.pop(session_id, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> None:
        """Sample every session once (the thread calls this; tests may too)."""
        with self._lock:
            groups = list(self._groups.values())
        for cgroup, emit, state in groups:
            try:
                self._check(cgroup.sample(), emit, state)
            except Exception as e:  # a vanished cgroup ends its own session
                log.debug("sandbox: sampling %s: %s", cgroup, e)

    # -- one session --------------------------------------------------------------------

    def _check(self, s: dict[str, Any], emit: Emit, state: _State) -> None:
        now = self._clock()
        last = state.last  # empty at first: every counter is new
        state.last = s
        hist = state.history
        hist.append((now, float(s.get("cpu_seconds", 0.0)), int(s.get("cpu_periods", 0)),
                     int(s.get("cpu_throttled", 0))))
        span = max(self.window_s, self.throttle_window_s)
        # Keep one reading at or before the longest window's start, so it can be covered.
        while len(hist) > 1 and hist[1][0] <= now - span:
            hist.popleft()
        for severity, detail in self._breaches(s, last, state, now):
            emit("resource.breach", detail, severity=severity)
        if now - state.sampled >= self.sample_every:
            state.sampled = now
            t0, cpu0, _, _ = self._since(hist, now - self.window_s)
            window = now - t0
            avg = (hist[-1][1] - cpu0) / window * 100 if window > 0 else 0.0
            emit("resource.sample", {
                **s, "cpu_percent_now": s.get("cpu_percent", 0.0),
                "cpu_percent": round(max(0.0, avg), 1), "window_s": round(window, 1)})

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

    def _breaches(self, s: dict[str, Any], last: dict[str, Any], state: _State,
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
        cpu = self._throttling(state, now, float(s.get("cpu_limit_percent", 0)))
        if cpu is not None:
            out.append(("warning", cpu))
        return out

    def _throttling(self, state: _State, now: float, quota: float) -> dict[str, Any] | None:
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
