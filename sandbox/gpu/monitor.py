"""Poll NVML, attribute GPU processes to sessions, enforce quotas, record evidence.

Quotas are enforced by poll-and-kill: memory over quota is acted on at the first poll
that sees it, utilisation over quota once it has held for `utilization_window_s`; the
poll interval is the enforcement window. Events (detail keys as in `sandbox.events`):

    gpu.sample        info/record     per session, rate-limited; `util` is averaged over
                                      `window_s` (up to `util_window_s`, 300 s) so the
                                      mining pack's saturation rule sees "sustained";
                                      `util_now` is the poll's own figure
    gpu.breach        alert/kill|flag memory or sustained utilisation over quota
    gpu.unauthorized  critical        GPU use by a session granted none, or of a GPU it
                                      was not granted (action: `on_unauthorized`)
    gpu.orphan        warning/record  a live GPU process that belongs to no session
                      alert/record    ... one whose session has ended (`was_session`)

Attribution: NVML reports host PIDs; a PID belongs to a session when the session's
root PID is among its ancestors (so children and grandchildren map), or it is one of the
session's `extra_pids` (e.g. what the process monitor saw escape by double fork). Once
attributed, a PID stays with its session while NVML keeps listing it. PIDs that no longer
exist (or are zombies) are ignored: NVML lists a killed process for a moment after it died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import Emit
from ..profile import GpuSection
from .backend import GpuBackend, GpuProcess, NvmlUnavailable

log = logging.getLogger(__name__)

MIB = 1 << 20
_MAX_DEPTH = 128  # ancestor walk bound; real trees are a dozen deep


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
EmitFor = Callable[[str], Emit | None]
KillSession = Callable[[str, str], None]


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


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _normalise(entry: SessionEntry) -> SessionGpu:
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


class GpuMonitor:
    """Polls a GpuBackend in a thread (`start`) or on demand (`poll_once`, for tests)."""

    def __init__(
        self,
        backend: GpuBackend,
        interval_s: float = 1.0,
        emit_for_session: EmitFor | None = None,
        kill_session: KillSession | None = None,
        sessions_provider: SessionsProvider | None = None,
        *,
        emit_host: Emit | None = None,
        on_unauthorized: Literal["flag", "kill"] = "kill",
        sample_every_s: float = 5.0,
        util_window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        emit_for_session(session_id) gives the session's Emit (None once it is gone);
        kill_session(session_id, reason) ends a session and should be idempotent: it is
        called at every poll while the session is still over quota. `emit_host` records
        orphans (GPU processes of no session); without it they are only kept in
        `orphans`. `on_unauthorized` is the security choice for GPU use without a grant:
        kill by default, since it means the device boundary failed.
        """
        self.backend = backend
        self.interval_s = interval_s
        self._emit_for = emit_for_session or (lambda _sid: None)
        self._kill = kill_session
        self._provider = sessions_provider or (lambda: {})
        self._emit_host = emit_host
        self.on_unauthorized = on_unauthorized
        self.sample_every_s = sample_every_s
        self.util_window_s = util_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since: dict[int, int] = {}  # device -> last poll, µs (NVML's sample clock)
        self._sticky: dict[int, str] = {}  # pid -> session, while NVML lists the pid
        self._usage: dict[str, SessionUsage] = {}
        self._last_sample: dict[str, tuple[float, int, int]] = {}  # sid -> (t, mem, util)
        self._util_hist: dict[str, deque[tuple[float, int]]] = {}  # sid -> (t, util) per poll
        self._over_since: dict[tuple[str, int], float] = {}  # (sid, dev) -> util over since
        self._episodes: set[tuple[str, int, str]] = set()  # (sid, dev, what) reported
        self._orphans_seen: set[tuple[int, int]] = set()
        self.orphans: list[dict[str, Any]] = []
        """Orphans seen at the last poll (detail dicts)."""
        self.last_error = ""
        self._next_interval = interval_s

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> GpuMonitor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _interval(self, sessions: Mapping[str, SessionGpu]) -> float:
        # A profile may ask for a tighter enforcement window than the monitor's default.
        wanted = [s.section.poll_interval_s for s in sessions.values()
                  if s.section is not None and s.section.poll_interval_s > 0]
        return min([self.interval_s, *wanted])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # the thread must outlive one bad poll
                if str(e) != self.last_error:
                    log.warning("GPU monitor poll failed: %s", e)
                self.last_error = str(e)
            self._stop.wait(self._next_interval)

    def usage(self, session_id: str) -> SessionUsage | None:
        """The session's GPU use at the last poll, or None if it never used a GPU."""
        with self._lock:
            return self._usage.get(session_id)

    def forget(self, session_id: str) -> None:
        """Drop a finished session's state (its sticky PIDs become orphans if they live)."""
        with self._lock:
            self._usage.pop(session_id, None)
            self._last_sample.pop(session_id, None)
            self._util_hist.pop(session_id, None)
            self._over_since = {k: v for k, v in self._over_since.items() if k[0] != session_id}
            self._episodes = {k for k in self._episodes if k[0] != session_id}
            self._sticky = {p: s for p, s in self._sticky.items() if s != session_id}

    # -- one poll --------------------------------------------------------------------

    def _sessions(self) -> dict[str, SessionGpu]:
        return {sid: _normalise(e) for sid, e in self._provider().items()}

    def poll_once(self) -> list[dict[str, Any]]:
        """Poll every device once, act, and return the events emitted (for tests)."""
        with self._lock:
            return self._poll()

    def _read(self) -> dict[int, tuple[list[GpuProcess], dict[int, int], int]]:
        """device -> (live processes, sm util per pid, device util)."""
        now_us = int(time.time() * 1e6)
        out: dict[int, tuple[list[GpuProcess], dict[int, int], int]] = {}
        for dev in self.backend.devices():
            i = dev.index
            procs = [p for p in self.backend.processes(i) if _alive(p.pid)]
            since = self._since.get(i, 0)
            self._since[i] = now_us
            if not procs:
                out[i] = ([], {}, 0)
                continue
            per_pid = self.backend.process_utilization(i, since)
            out[i] = (procs, per_pid, self.backend.utilization(i)[0])
        return out

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

    def _poll(self) -> list[dict[str, Any]]:
        sessions = self._sessions()
        self._next_interval = self._interval(sessions)
        try:
            readings = self._read()
        except NvmlUnavailable as e:
            self.last_error = str(e)
            raise
        now = self._clock()
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

        emitted: list[dict[str, Any]] = []
        for sid, s in sessions.items():
            devices = used.get(sid, {})
            if devices or sid in self._usage:
                self._usage[sid] = SessionUsage(at=now, devices=devices)
            emitted += self._check(sid, s, devices, now)
        emitted += self._report_orphans(orphans)
        return emitted

    # -- decisions -------------------------------------------------------------------

    def _emit(self, sid: str | None, kind: str, detail: dict[str, Any], severity: str,
              action: str) -> dict[str, Any]:
        emit = self._emit_host if sid is None else self._emit_for(sid)
        if emit is not None:
            emit(kind, detail, severity=severity, action=action)
        return {"session": sid, "kind": kind, "detail": detail, "severity": severity,
                "action": action}

    def _do_kill(self, sid: str, reason: str) -> str:
        if self._kill is None:
            return "no kill callback"
        try:
            self._kill(sid, reason)
        except Exception as e:  # a failed kill must not stop the monitor
            log.warning("killing session %s failed: %s", sid, e)
            return str(e)
        return ""

    def _episode(self, key: tuple[str, int, str], active: bool) -> bool:
        """True when `active` starts a new episode for `key` (report it once)."""
        if not active:
            self._episodes.discard(key)
            return False
        if key in self._episodes:
            return False
        self._episodes.add(key)
        return True

    def _check(self, sid: str, s: SessionGpu, devices: dict[int, DeviceUsage],
               now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        section, granted = s.section, set(s.granted)
        kill_reasons: list[str] = []
        for dev in sorted(set(devices) | {k[1] for k in self._episodes if k[0] == sid}):
            u = devices.get(dev)
            base = ({"gpu": str(dev), "pid": u.pids[0], "pids": list(u.pids),
                     "mem_bytes": u.mem_bytes, "util": u.util} if u else {})
            # Unauthorized: no grant at all, or a GPU outside the grant.
            bad = u is not None and (section is None or dev not in granted)
            if self._episode((sid, dev, "unauthorized"), bad):
                why = ("session has no GPU grant" if section is None
                       else f"GPU {dev} is not granted (granted: {sorted(granted)})")
                out.append(self._emit(sid, "gpu.unauthorized",
                                      {**base, "granted": sorted(granted), "reason": why},
                                      "critical", self.on_unauthorized))
            if bad and self.on_unauthorized == "kill":
                kill_reasons.append(f"unauthorized GPU use on GPU {dev}")
            if section is None:
                continue
            action = section.on_breach
            # Memory: acted on at the first poll over quota.
            limit = section.memory_limit_mib * MIB
            over_mem = bool(u and limit and u.mem_bytes > limit)
            if self._episode((sid, dev, "memory"), over_mem):
                out.append(self._emit(sid, "gpu.breach", {
                    **base, "limit": "memory", "limit_bytes": limit,
                    "limit_mib": section.memory_limit_mib,
                }, "alert", action))
            if over_mem and action == "kill":
                kill_reasons.append(f"GPU {dev} memory over quota "
                                    f"({u.mem_bytes >> 20 if u else 0} MiB > "
                                    f"{section.memory_limit_mib} MiB)")
            # Utilisation: acted on once it has held for the window.
            pct = section.utilization_limit_percent
            key = (sid, dev)
            if u and pct and u.util > pct:
                self._over_since.setdefault(key, now)
            else:
                self._over_since.pop(key, None)
            held = now - self._over_since[key] if key in self._over_since else 0.0
            over_util = key in self._over_since and held >= section.utilization_window_s
            if self._episode((sid, dev, "utilization"), over_util):
                out.append(self._emit(sid, "gpu.breach", {
                    **base, "limit": "utilization", "limit_percent": pct,
                    "window_s": held,
                }, "alert", action))
            if over_util and action == "kill":
                kill_reasons.append(f"GPU {dev} utilisation over {pct}% for {held:.0f}s")
        out += self._sample(sid, devices, now)
        if kill_reasons:
            reason = "; ".join(kill_reasons)
            error = self._do_kill(sid, reason)
            if error:
                out.append(self._emit(sid, "session.warning", {
                    "reason": f"GPU monitor could not kill the session ({reason}): {error}"},
                    "alert", "record"))
        return out

    def _sample(self, sid: str, devices: dict[int, DeviceUsage],
                now: float) -> list[dict[str, Any]]:
        usage = SessionUsage(at=now, devices=devices)
        mem, util = usage.mem_bytes, usage.util
        last = self._last_sample.get(sid)
        if last is None and not devices:
            return []  # never used a GPU: nothing to say
        hist = self._util_hist.setdefault(sid, deque())
        hist.append((now, util))
        # One reading at or before the window's start stays, so window_s can reach it.
        while len(hist) > 1 and hist[1][0] <= now - self.util_window_s:
            hist.popleft()
        if last is not None:
            t, lmem, lutil = last
            big = (abs(mem - lmem) > max(64 * MIB, lmem // 5) or abs(util - lutil) >= 20
                   or ((lmem or lutil) and not (mem or util)))
            if now - t < self.sample_every_s and not big:
                return []
            if not devices and not (lmem or lutil):
                return []  # idle and already reported idle
        self._last_sample[sid] = (now, mem, util)
        pids = sorted({p for d in devices.values() for p in d.pids})
        avg = sum(u for _, u in hist) / len(hist)
        detail = {"gpu": ",".join(str(d) for d in sorted(devices)), "pid": pids[0] if pids else 0,
                  "pids": pids, "mem_bytes": mem, "util": round(avg, 1), "util_now": util,
                  "window_s": round(now - hist[0][0], 1),
                  "devices": {str(d): {"mem_bytes": u.mem_bytes, "util": u.util,
                                       "pids": list(u.pids)} for d, u in sorted(devices.items())}}
        return [self._emit(sid, "gpu.sample", detail, "info", "record")]

    def _report_orphans(self, orphans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.orphans = orphans
        current = {(int(o["gpu"]), int(o["pid"])) for o in orphans}
        self._orphans_seen &= current
        out = []
        for o in orphans:
            key = (int(o["gpu"]), int(o["pid"]))
            if key not in self._orphans_seen:
                self._orphans_seen.add(key)
                severity = "alert" if o.get("was_session") else "warning"
                out.append(self._emit(None, "gpu.orphan", o, severity, "record"))
        return out
