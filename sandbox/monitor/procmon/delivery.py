"""The delivery pool: a few threads that hand queued execs to the store and the rules.

The pool serves sessions round-robin, one event at a time, never two threads on one
session (its events stay in order), so an exec flood in one session delays that
session's own events, not another's. A session's delivery CPU is metered against
`Budget.cpu_percent`; over it, the session waits for its share and its queue fills. The
same threads housekeep: they resume sessions whose share came back, thaw held ones,
record pending `proc.lost` / `record.dropped` / `record.backpressure` counts, and rescan
after a kernel overrun, so the reader thread never does any of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from ...events import Emit
from ..proctree import ProcInfo
from .queueing import SessionQueue

EmitFor = Callable[[str], Emit | None]  # session_id -> that session's Emit
OnExec = Callable[[str, ProcInfo], None]  # (session_id, info), e.g. feeds the guard

WORKERS = 4  # delivery threads shared by all sessions (one session uses one at a time)
REPORT_EVERY_S = 1.0  # proc.lost / record.dropped: at most this often per session
_HOUSEKEEP_S = 0.2

log = logging.getLogger("sandbox")


class Delivery:
    """The registered sessions' queues and the threads that drain them.

    `lock` is the monitor's: the tracker fills the queues under it.
    """

    def __init__(self, lock: threading.RLock, stop: threading.Event, *,
                 emit_for_session: EmitFor | None, on_exec: OnExec | None,
                 rescan: Callable[[], None], workers: int = WORKERS) -> None:
        self.emit_for_session = emit_for_session
        self.on_exec = on_exec
        self.rescan = rescan
        self.workers = max(1, workers)
        self.queues: dict[str, SessionQueue] = {}
        self.lock = lock
        self.cv = threading.Condition(lock)  # workers wait here for work
        self.idle = threading.Condition(lock)  # drain/unregister wait here
        self.ready: deque[str] = deque()  # sessions with events, round-robin
        self.busy = 0  # workers delivering right now
        self.rescan_wanted = False
        self._housekept = 0.0
        self._stop = stop
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._worker, name=f"sandbox-procmon-out{i}", daemon=True)
            for i in range(self.workers)]
        for t in self.threads:
            t.start()

    def wake(self) -> None:
        with self.cv:
            self.cv.notify_all()

    def overrun(self) -> None:
        """Events were lost and nobody knows whose: every live session is told (in
        proc.lost) and rescanned, by a delivery thread."""
        with self.cv:
            for q in self.queues.values():
                q.lose("netlink_overrun")
            self.rescan_wanted = True
            self.cv.notify()

    def schedule(self, q: SessionQueue, now: float) -> None:
        """Under the lock: put a session with events in the round-robin."""
        if not q.scheduled and q.queued() and q.paused_until <= now:
            q.scheduled = True
            self.ready.append(q.session_id)
            self.cv.notify()

    def release(self, q: SessionQueue) -> None:
        """Thaw a held session for good (it is being killed: signals must land)."""
        with self.lock:
            q.closing = True
            thaw = q.caught_up(time.monotonic())
        if thaw and q.cgroup is not None:
            q.cgroup.hold(False)

    # -- the workers ---------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            q: SessionQueue | None = None
            item: tuple[ProcInfo, str] | None = None
            with self.cv:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now - self._housekept >= _HOUSEKEEP_S:
                        self._housekept = now
                        break
                    if self.ready:
                        q = self.queues.get(self.ready.popleft())
                        if q is not None and q.queued():
                            item = q.pop()
                            break
                        if q is not None:
                            q.scheduled = False
                        q = None
                        continue
                    self.cv.wait(_HOUSEKEEP_S / 2)
                if self._stop.is_set():
                    return
                self.busy += 1
            used = 0.0
            try:
                if item is None:
                    self._housekeep()
                else:
                    assert q is not None
                    t0 = time.thread_time()
                    self._deliver(q, *item)
                    used = time.thread_time() - t0
            finally:
                thaw = False
                with self.cv:
                    self.busy -= 1
                    if q is not None:
                        now = time.monotonic()
                        q.cpu_used += used
                        # An ending session's last events are drained at full speed:
                        # nothing new can come, and they would be lost otherwise.
                        pause = q.cpu.charge(used, now)
                        q.paused_until = 0.0 if q.closing else now + pause
                        q.scheduled = False
                        if q.session_id in self.queues:
                            self.schedule(q, now)
                        thaw = q.caught_up(now)
                    self.idle.notify_all()
                if thaw and q is not None and q.cgroup is not None:
                    q.cgroup.hold(False)

    def _housekeep(self) -> None:
        """Runs on a delivery thread every few tenths of a second: resume sessions whose
        CPU share came back, record pending loss and drop counts, rescan after an
        overrun."""
        now = time.monotonic()
        with self.lock:
            queues = list(self.queues.values())
            thaw = []
            for q in queues:
                self.schedule(q, now)
                if q.caught_up(now):
                    thaw.append(q)
            rescan, self.rescan_wanted = self.rescan_wanted, False
        for q in thaw:
            if q.cgroup is not None:
                q.cgroup.hold(False)
        for q in queues:
            self.report(q, now)
        if rescan:
            self.rescan()

    def _emit_for(self, q: SessionQueue) -> Emit | None:
        return q.emit or (self.emit_for_session(q.session_id)
                          if self.emit_for_session else None)

    def report(self, q: SessionQueue, now: float, *, force: bool = False) -> None:
        """Record `proc.lost` and `record.dropped` for what is pending (at most once per
        `REPORT_EVERY_S` each, unless forced)."""
        lost: dict[str, int] = {}
        dropped: dict[str, int] = {}
        held: tuple[int, float] | None = None
        with self.lock:
            if q.held_new and (force or now - q.held_reported >= REPORT_EVERY_S):
                held = (q.held_new, q.held_s)
                q.held_new, q.held_s = 0, 0.0
                q.held_reported = now
            if q.lost and (force or now - q.lost_reported >= REPORT_EVERY_S):
                lost, q.lost = dict(q.lost), Counter()
                q.lost_reported = now
            if q.dropped and (force or now - q.dropped_reported >= REPORT_EVERY_S):
                dropped, q.dropped = dict(q.dropped), Counter()
                size, q.dropped_bytes = q.dropped_bytes, 0
                window = now - q.dropped_since
                q.dropped_reported = now
        emit = self._emit_for(q)
        if emit is None:
            return
        try:  # a broken consumer must not stop recording
            if lost:
                emit("proc.lost", {
                    "lost": sum(lost.values()), **lost, "total": q.lost_total,
                    "reason": "exec events dropped before they were judged: "
                              + ", ".join(sorted(lost))}, severity="warning")
            if dropped:
                emit("record.dropped", {
                    "counts": dropped, "bytes": size, "window_s": round(window, 3),
                    "events_per_s": q.budget.events_per_s,
                    "bytes_per_s": q.budget.bytes_per_s,
                    "reason": "over the session's record budget: summarised, still judged"})
            if held:
                emit("record.backpressure", {
                    "holds": held[0], "held_s": round(held[1], 3),
                    "cpu_percent": q.budget.cpu_percent,
                    "reason": "the session's execs outran its share of the recorder: it was "
                              "frozen until they were judged (none lost)"})
        except Exception as e:
            log.warning("sandbox: session %s: recording lost/dropped counts: %s",
                        q.session_id, e)

    def _deliver(self, q: SessionQueue, info: ProcInfo, source: str) -> None:
        detail = {**info.detail(), "source": source}
        size = 160 + sum(len(a) + 3 for a in info.argv) + len(info.exe)
        now = time.monotonic()
        with self.lock:
            keep = q.within_budget(size, now)
        emit = self._emit_for(q)
        try:  # a broken consumer must not stop recording
            if keep and emit is not None:
                emit("proc.exec", detail)
        except Exception as e:
            log.warning("sandbox: session %s: recording an exec: %s", q.session_id, e)
        if not keep and now - q.dropped_reported >= REPORT_EVERY_S:
            self.report(q, now)
        try:
            if self.on_exec is not None:
                self.on_exec(q.session_id, info)
        except Exception as e:
            log.warning("sandbox: session %s: judging an exec: %s", q.session_id, e)

    def wait_idle(self, queues: list[SessionQueue] | None, timeout: float) -> None:
        """Wait (bounded) until `queues` (None: every session, and no worker busy) have
        nothing queued or in delivery."""
        deadline = time.monotonic() + timeout
        with self.idle:
            while time.monotonic() < deadline:
                pending = queues if queues is not None else list(self.queues.values())
                if not any(q.queued() or q.scheduled for q in pending) and (
                        queues is not None or not self.busy):
                    return
                self.idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
