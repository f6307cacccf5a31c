"""`ProcessMonitor`: which pid belongs to which session, and every exec recorded for it.

The tracker owns the sessions' process trees: pids adopted at fork (so double-forked
daemons stay attributed after they leave the tree), at the jail's first exec through
/proc/<pid>/cgroup, or by a scan (at register, after an overrun, and every
`poll_interval` when there is no proc connector). It turns the reader's events into
queued execs (`queueing`) that the pool (`delivery`) hands on; it only wires the two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...events import Emit
from ...jail.cgroups import SessionCgroup
from .. import proctree
from ..proctree import ProcInfo
from .delivery import WORKERS, Delivery, EmitFor, OnExec
from .queueing import Budget, SessionQueue
from .reader import EventReader

MAX_KNOWN = 100_000  # per session: a fork bomb must not grow the supervisor without bound


class _Tracked:
    """One registered session's process tree; its delivery state is `q`."""

    def __init__(self, q: SessionQueue, root_pid: int | None) -> None:
        self.q = q
        self.session_id = q.session_id
        self.root_pid = root_pid
        self.live: set[int] = set()
        self.known: dict[int, ProcInfo] = {}
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (start, comm)
        self.ever: set[int] = set()  # every pid adopted, forks without exec too
        self.joining = 0  # execs entering from outside (`exec`'s firejail --join) starting


def _cgroup_paths(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


class ProcessMonitor:
    """Records every exec in each registered session's process tree (one reader for all)."""

    def __init__(self, emit_for_session: EmitFor | None = None, on_exec: OnExec | None = None,
                 *, poll_interval: float = 0.05, force_poll: bool = False,
                 workers: int = WORKERS, reader_process: bool = True) -> None:
        self.poll_interval = poll_interval
        self.force_poll = force_poll
        self.mode = ""
        """"netlink" or "poll" once started."""
        self.lost_events = 0
        """Kernel overruns (ENOBUFS) seen so far, for all sessions."""
        self._sessions: dict[str, _Tracked] = {}
        self._owner: dict[int, str] = {}  # live pid -> session id
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._delivery = Delivery(self._lock, self._stop, emit_for_session=emit_for_session,
                                  on_exec=on_exec, rescan=self._rescan, workers=workers)
        self.reader = EventReader(self, self._stop, process=reader_process)

    @property
    def on_exec(self) -> OnExec | None:
        """Called with (session_id, info) for every exec, on a delivery thread."""
        return self._delivery.on_exec

    @on_exec.setter
    def on_exec(self, fn: OnExec | None) -> None:
        self._delivery.on_exec = fn

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ProcessMonitor:
        if self._threads:
            return self
        netlink = not self.force_poll and self.reader.open()
        self.mode = "netlink" if netlink else "poll"
        loop = self.reader.loop if netlink else self._poll_loop
        self._threads = [threading.Thread(target=loop, name="sandbox-procmon", daemon=True)]
        self._threads[0].start()
        self._delivery.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._delivery.wake()
        self.reader.stop_child()
        for t in self._threads + self._delivery.threads:
            t.join(timeout=2)
        self.reader.close()

    def register(self, session_id: str, root_pid: int | None = None,
                 cgroup: SessionCgroup | None = None, *, emit: Emit | None = None,
                 budget: Budget | None = None) -> None:
        """Watch a session. Call again to add the root pid after registering the cgroup.

        Processes already running are recorded at once (source "scan").
        """
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                q = SessionQueue(session_id, cgroup, emit)
                q.set_budget(budget or Budget())
                tr = self._sessions[session_id] = _Tracked(q, root_pid)
                self._delivery.queues[session_id] = q
            elif budget is not None:
                tr.q.set_budget(budget)
            tr.root_pid = root_pid or tr.root_pid
            tr.q.cgroup = cgroup or tr.q.cgroup
            tr.q.emit = emit or tr.q.emit
            if root_pid:
                self._adopt(tr, root_pid)
        self.start()
        self._scan(tr, "scan")

    def joining(self, session_id: str, delta: int, pid: int | None = None) -> None:
        """A process is entering the jail from outside (`exec`: firejail --join, forked by
        the supervisor, not by anything in the jail, so no fork makes it known). While
        `joining` is positive an unknown exec'ing pid is looked up in the session's cgroup
        (the join process joins it before its exec); `pid`, once forked, is adopted at once
        so the forks of what it runs are the session's whatever the event order."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                return
            if pid is not None:
                self._adopt(tr, pid)
            tr.joining = max(0, tr.joining + delta)

    def unregister(self, session_id: str) -> None:
        """Stop watching a session; what is still queued is delivered first (bounded),
        and pending loss and drop counts are recorded."""
        with self._lock:
            tr = self._sessions.get(session_id)
        if tr is None:
            return
        q = tr.q
        self._delivery.release(q)  # thawed, and drained at full speed from here
        with self._lock:
            q.paused_until = 0.0
            self._delivery.schedule(q, time.monotonic())
        self.reader.sync(0.5)
        self._delivery.wait_idle([q], 1.0)
        with self._lock:
            self._sessions.pop(session_id, None)
            self._delivery.queues.pop(session_id, None)
            for pid in tr.live:
                if self._owner.get(pid) == session_id:
                    del self._owner[pid]
            if q.queued():
                q.lose("unregistered", q.queued())
                for lane in q.lanes:
                    lane.clear()
        self._delivery.report(q, time.monotonic(), force=True)

    def release(self, session_id: str) -> None:
        """Thaw a held session for good (it is being killed: signals must land)."""
        with self._lock:
            tr = self._sessions.get(session_id)
        if tr is not None:
            self._delivery.release(tr.q)

    def set_urgent(self, session_id: str, names: frozenset[str]) -> None:
        """Program names whose execs a session's rules judge first (see `lane_of`)."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is not None:
                tr.q.urgent = frozenset(names)

    # -- what is known ------------------------------------------------------------------

    def known_pids(self, session_id: str) -> set[int]:
        """Every pid seen in the session so far (live or exited, exec'd or only forked)."""
        with self._lock:
            tr = self._sessions.get(session_id)
            return set(tr.ever) | set(tr.known) if tr else set()

    def live_pids(self, session_id: str) -> set[int]:
        with self._lock:
            tr = self._sessions.get(session_id)
            return set(tr.live) if tr else set()

    def processes(self, session_id: str) -> list[ProcInfo]:
        """The last info recorded for every known pid of the session."""
        with self._lock:
            tr = self._sessions.get(session_id)
            return list(tr.known.values()) if tr else []

    def reader_cpu_s(self) -> float:
        """CPU seconds the reader process has used (0 without one): supervisor cost too."""
        return self.reader.cpu_s()

    def stats(self, session_id: str) -> dict[str, float]:
        """Delivery figures of a live session: CPU seconds used, events queued, lost."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                return {}
            return {"cpu_s": tr.q.cpu_used, "queued": tr.q.queued(), "lost": tr.q.lost_total}

    def settle(self, session_id: str, timeout: float = 0.5) -> None:
        """Wait (bounded) until the execs already handed over for one session are
        judged, so a command's exec verdicts land in that command's result.

        No round trip to the reader (that costs ~0.3 ms a command): by the time bash
        prints its end marker the reader, at real-time priority, has almost always
        handed the command's execs over; one still in flight lands in the next result.
        """
        with self._lock:
            tr = self._sessions.get(session_id)
            busy = tr is not None and (tr.q.queued() or tr.q.scheduled)
        if busy:
            assert tr is not None
            self._delivery.wait_idle([tr.q], timeout)

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until the events the kernel has queued so far are delivered (tests)."""
        deadline = time.monotonic() + timeout
        self.reader.sync(timeout)
        self._delivery.wait_idle(None, max(0.0, deadline - time.monotonic()))

    # -- the reader's events (reader.Sink; on the reader thread: bookkeeping only) --------

    def forked(self, ppid: int, child: int) -> None:
        with self._lock:
            sid = self._owner.get(ppid)
            if sid is not None and sid in self._sessions:
                self._adopt(self._sessions[sid], child)

    def execed(self, pid: int, info: Callable[[], ProcInfo] | None) -> None:
        """`info` is what the reader process read at the exec; None: read it now."""
        with self._lock:
            tr = self._attribute(pid) if self._sessions else None
        if tr is not None:
            self._record(tr, info() if info is not None else proctree.info(pid), "netlink")

    def exited(self, pid: int) -> None:
        with self._lock:
            sid = self._owner.pop(pid, None)
            if sid is not None and sid in self._sessions:
                self._sessions[sid].live.discard(pid)
                self._sessions[sid].seen.pop(pid, None)

    def overrun(self) -> None:
        """Events were lost and nobody knows whose: every live session is told (in
        proc.lost) and rescanned, by a delivery thread, not this one."""
        with self._lock:
            self.lost_events += 1
            self._delivery.overrun()

    # -- bookkeeping (under the lock) ---------------------------------------------------

    def _adopt(self, tr: _Tracked, pid: int) -> None:
        tr.live.add(pid)
        if len(tr.ever) < MAX_KNOWN:
            tr.ever.add(pid)
        self._owner[pid] = tr.session_id

    def _attribute(self, pid: int) -> _Tracked | None:
        """The session an exec'ing pid belongs to. Forks make most pids known already;
        /proc is read only while a session waits for its first process (registered with
        a cgroup and no live pid yet), so execs elsewhere on the host cost a dict lookup."""
        sid = self._owner.get(pid)
        if sid is None:
            waiting = {tr.q.cgroup.rel_path: tr for tr in self._sessions.values()
                       if tr.q.cgroup and (not tr.live or tr.joining)}
            for path in _cgroup_paths(pid) if waiting else ():
                for rel, tr in waiting.items():
                    if path == rel or path.startswith(rel + "/"):
                        sid = tr.session_id
        found = self._sessions.get(sid) if sid else None
        if found is not None:
            self._adopt(found, pid)
        return found

    def _record(self, tr: _Tracked, info: ProcInfo, source: str) -> None:
        """Queue an exec for delivery (any thread; cheap: the reader calls it)."""
        with self._lock:
            if info.start and tr.known.get(info.pid) == info:
                return  # the register scan and the kernel event saw the same exec
            if info.start:
                tr.seen[info.pid] = (info.start, info.comm)
            if info.pid in tr.known or len(tr.known) < MAX_KNOWN:
                tr.known[info.pid] = info
            if tr.session_id not in self._sessions:
                return
            now = time.monotonic()
            queued, hold = tr.q.push(info, source, now)
            if queued:
                self._delivery.schedule(tr.q, now)
        if hold:
            assert tr.q.cgroup is not None
            tr.q.cgroup.hold(True)

    # -- scanning: at register, after an overrun, and as the poll mode ------------------

    def _rescan(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for tr in sessions:
            self._scan(tr, "resync")

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            with self._lock:
                sessions = list(self._sessions.values())
            for tr in sessions:
                self._scan(tr, "poll")

    def _scan(self, tr: _Tracked, source: str) -> None:
        """Record new processes (and execs in place) in the session's tree and cgroup."""
        with self._lock:
            frontier = set(tr.live) | ({tr.root_pid} if tr.root_pid else set())
        pids = set(tr.q.cgroup.pids()) if tr.q.cgroup else set()
        todo = list(frontier | pids)
        found: set[int] = set()
        while todo and len(found) < MAX_KNOWN:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(proctree.children(pid))
        alive: set[int] = set()
        for pid in found:
            stat = proctree.info_stat(pid)
            if stat is None:
                continue
            start, comm, ppid = stat
            alive.add(pid)
            prev = tr.seen.get(pid)
            if prev == (start, comm):
                continue
            info = proctree.info(pid, comm)
            parent = tr.known.get(ppid)
            forked = (prev is None and parent is not None and parent.argv == info.argv
                      and parent.exe == info.exe)
            if forked:
                with self._lock:  # a fork without exec (subshell): known, not an exec
                    tr.seen[pid] = (start, comm)
                    tr.known.setdefault(pid, info)
                continue
            self._record(tr, info, source)
        with self._lock:
            for pid in alive:
                self._adopt(tr, pid)
            if source == "poll":
                for pid in tr.live - alive:
                    tr.live.discard(pid)
                    tr.seen.pop(pid, None)
                    if self._owner.get(pid) == tr.session_id:
                        del self._owner[pid]
