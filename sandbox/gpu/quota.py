"""GPU quota decisions and evidence: one poll's per-session usage in, events out.

Memory over quota is acted on at the first poll that sees it, utilisation over quota once
it has held for the profile's `utilization_window_s`. Each breach, unauthorized use and
orphan is reported once per episode (it starts when the condition does, ends when it
clears). `gpu.sample` is rate-limited, with `util` averaged over `util_window_s`.

Reads nothing itself: `monitor.GpuMonitor` polls NVML, `attribution` maps the processes;
this module decides and emits (and asks `kill_session` to end a session).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from ..events import Emit
from .attribution import DeviceUsage, SessionGpu, SessionUsage

log = logging.getLogger("sandbox.gpu.monitor")  # one logger for the monitor's warnings

MIB = 1 << 20

EmitFor = Callable[[str], Emit | None]
KillSession = Callable[[str, str], None]


class Quotas:
    """Per-session quota state across polls; `check` judges one session at one poll."""

    def __init__(self, emit_for_session: EmitFor, kill_session: KillSession | None,
                 emit_host: Emit | None, *, on_unauthorized: Literal["flag", "kill"],
                 sample_every_s: float, util_window_s: float) -> None:
        self._emit_for = emit_for_session
        self._kill = kill_session
        self._emit_host = emit_host
        self.on_unauthorized = on_unauthorized
        self.sample_every_s = sample_every_s
        self.util_window_s = util_window_s
        self._last_sample: dict[str, tuple[float, int, int]] = {}  # sid -> (t, mem, util)
        self._util_hist: dict[str, deque[tuple[float, int]]] = {}  # sid -> (t, util) per poll
        self._over_since: dict[tuple[str, int], float] = {}  # (sid, dev) -> util over since
        self._episodes: set[tuple[str, int, str]] = set()  # (sid, dev, what) reported
        self._orphans_seen: set[tuple[int, int]] = set()
        self.orphans: list[dict[str, Any]] = []
        """Orphans seen at the last poll (detail dicts)."""

    def forget(self, session_id: str) -> None:
        """Drop a finished session's state."""
        self._last_sample.pop(session_id, None)
        self._util_hist.pop(session_id, None)
        self._over_since = {k: v for k, v in self._over_since.items() if k[0] != session_id}
        self._episodes = {k for k in self._episodes if k[0] != session_id}

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

    def check(self, sid: str, s: SessionGpu, devices: dict[int, DeviceUsage],
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

    def report_orphans(self, orphans: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
