"""Poll NVML in a thread and enforce GPU quotas: the loop that ties the GPU parts together.

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

Each poll: read every device (`_read`, NVML through the `GpuBackend`), attribute its
processes to sessions (`attribution`), then decide and emit per session (`quota`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..events import Emit
from .attribution import (
    Attribution,
    Readings,
    SessionGpu,
    SessionsProvider,
    SessionUsage,
    alive,
    normalise,
)
from .backend import GpuBackend, NvmlUnavailable
from .quota import EmitFor, KillSession, Quotas

log = logging.getLogger(__name__)


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
        self._provider = sessions_provider or (lambda: {})
        self.quotas = Quotas(emit_for_session or (lambda _sid: None), kill_session, emit_host,
                             on_unauthorized=on_unauthorized, sample_every_s=sample_every_s,
                             util_window_s=util_window_s)
        self._attribution = Attribution()
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since: dict[int, int] = {}  # device -> last poll, µs (NVML's sample clock)
        self._usage: dict[str, SessionUsage] = {}
        self.last_error = ""
        self._next_interval = interval_s

    @property
    def orphans(self) -> list[dict[str, Any]]:
        """Orphans seen at the last poll (detail dicts)."""
        return self.quotas.orphans

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
            self.quotas.forget(session_id)
            self._attribution.forget(session_id)

    # -- one poll --------------------------------------------------------------------

    def _sessions(self) -> dict[str, SessionGpu]:
        return {sid: normalise(e) for sid, e in self._provider().items()}

    def poll_once(self) -> list[dict[str, Any]]:
        """Poll every device once, act, and return the events emitted (for tests)."""
        with self._lock:
            return self._poll()

    def _read(self) -> Readings:
        """device -> (live processes, sm util per pid, device util)."""
        now_us = int(time.time() * 1e6)
        out: Readings = {}
        for dev in self.backend.devices():
            i = dev.index
            procs = [p for p in self.backend.processes(i) if alive(p.pid)]
            since = self._since.get(i, 0)
            self._since[i] = now_us
            if not procs:
                out[i] = ([], {}, 0)
                continue
            per_pid = self.backend.process_utilization(i, since)
            out[i] = (procs, per_pid, self.backend.utilization(i)[0])
        return out

    def _poll(self) -> list[dict[str, Any]]:
        sessions = self._sessions()
        self._next_interval = self._interval(sessions)
        try:
            readings = self._read()
        except NvmlUnavailable as e:
            self.last_error = str(e)
            raise
        now = self._clock()
        used, orphans = self._attribution.attribute(readings, sessions)
        emitted: list[dict[str, Any]] = []
        for sid, s in sessions.items():
            devices = used.get(sid, {})
            if devices or sid in self._usage:
                self._usage[sid] = SessionUsage(at=now, devices=devices)
            emitted += self.quotas.check(sid, s, devices, now)
        emitted += self.quotas.report_orphans(orphans)
        return emitted
