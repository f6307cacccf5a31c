"""Every exec in a session's process tree, seen from outside the sandbox.

`ProcessMonitor` watches all registered sessions of this process with one reader:

- **netlink** (root / CAP_NET_ADMIN): the kernel's proc connector multicasts every fork,
  exec and exit on the host. A pid belongs to a session when its parent did at fork time
  (so double-forked daemons stay attributed after they leave the tree), or when
  /proc/<pid>/cgroup puts it in the session's cgroup (the jail's first exec). The
  events are read, and argv read from /proc right after each exec, by a small reader
  process (`procreader`: it shares no GIL with the supervisor's busy threads, so a
  process living a few milliseconds is still read in time; in-process if it cannot be
  started). At most `proctree.ARGV_CAP` bytes of argv are kept (head and tail, marked
  `argv_truncated`); a process already gone is marked `argv_unknown`.
- **poll** (anyone; `force_poll=True` in tests): every `poll_interval` the tree below the
  registered root, every live known pid and the cgroup's members are listed; a new pid or
  a changed comm is an exec. Processes shorter than the interval can be missed.

The reader thread only does bookkeeping: everything else (the store,
the guard's rules) runs on a small pool of delivery threads. Each session has its own
bounded queue, and the pool serves sessions round-robin, one event at a time, never two
threads on one session (its events stay in order): an exec flood in one session delays
that session's own events, not another's; within a session, execs of programs the rules
name and execs with small argv are served before big ones (`_lane`). A session's
delivery CPU (store + rules) is
metered against `Budget.cpu_percent`; over it, the session waits for its share and its
queue fills.

Nothing is dropped silently. When a session's queue is full, or the kernel drops events
(ENOBUFS: the session cannot be known, so every live session is told, and every session
is rescanned off the reader thread), a `proc.lost` event with the counts is recorded for
the session (at most once a second, while it lasts). When a session records more
`proc.exec` events than its budget (`Budget.events_per_s`, `bytes_per_s`), the excess
is summarised in a `record.dropped` event with counts by kind, at least once a second;
the rules (`on_exec`) still see every exec.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import fdwait, procreader, proctree
from .cgroups import SessionCgroup
from .events import Emit
from .procreader import EV_EXEC, EV_FORK, parse, subscribe
from .proctree import ProcInfo

EmitFor = Callable[[str], Emit | None]  # session_id -> that session's Emit
OnExec = Callable[[str, ProcInfo], None]  # (session_id, info), e.g. feeds the guard

MAX_KNOWN = 100_000  # per session: a fork bomb must not grow the supervisor without bound
WORKERS = 4  # delivery threads shared by all sessions (one session uses one at a time)
REPORT_EVERY_S = 1.0  # proc.lost / record.dropped: at most this often per session
_HOUSEKEEP_S = 0.2
HOLD_AT = 0.5  # a lane this full freezes the session's cgroup (its execs wait, none lost)
RELEASE_AT = 0.125  # ...and it thaws once every lane is this empty and its share is back

log = logging.getLogger("sandbox")


@dataclass(frozen=True)
class Budget:
    """What one session's exec events may cost the supervisor (profile `[recording]`).

    0 means unlimited. Rates are averages; bursts of one second's worth pass.
    """

    events_per_s: float = 0.0
    """`proc.exec` rows per second; beyond, they are counted in `record.dropped`."""
    bytes_per_s: float = 0.0
    """`proc.exec` detail bytes per second (mostly argv); beyond, counted the same way."""
    cpu_percent: float = 0.0
    """Supervisor CPU for delivering the session's events (store and rules), percent of
    one core; beyond, the session waits for its share and its queue fills."""
    queue: int = 512
    """Events waiting per session and lane (a quarter of it for big argv); beyond, they
    are lost and counted in `proc.lost`."""


class _Bucket:
    """A token bucket; `rate` <= 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = burst
        self.at = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now

    def take(self, amount: float, now: float) -> bool:
        """Take `amount` if there is that much left (all or nothing)."""
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.level < amount:
            return False
        self.level -= amount
        return True

    def charge(self, amount: float, now: float) -> float:
        """Take `amount` even into debt; the seconds until the bucket is positive again."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level > 0 else -self.level / self.rate + 0.001


@dataclass
class _Tracked:
    session_id: str
    root_pid: int | None
    cgroup: SessionCgroup | None
    emit: Emit | None
    budget: Budget = field(default_factory=Budget)
    live: set[int] = field(default_factory=set)
    known: dict[int, ProcInfo] = field(default_factory=dict)
    seen: dict[int, tuple[str, str]] = field(default_factory=dict)  # pid -> (start, comm)
    ever: set[int] = field(default_factory=set)  # every pid adopted, forks without exec too
    # -- delivery (under the monitor's lock) --
    lanes: tuple[deque[tuple[ProcInfo, str]], ...] = field(
        default_factory=lambda: (deque(), deque(), deque()))  # see `_lane`
    urgent: frozenset[str] = frozenset()  # program names rules look for (ssh, nc, ...)
    scheduled: bool = False  # in the ready queue or being delivered by a worker
    paused_until: float = 0.0  # over its CPU budget until then
    lost: Counter[str] = field(default_factory=Counter)  # not yet reported in proc.lost
    lost_total: int = 0
    joining: int = 0  # execs entering from outside (`exec`'s firejail --join) being started
    lost_reported: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)  # not yet in record.dropped
    dropped_bytes: int = 0
    dropped_since: float = 0.0
    dropped_reported: float = 0.0
    events: _Bucket = field(default_factory=lambda: _Bucket(0, 0))
    bytes: _Bucket = field(default_factory=lambda: _Bucket(0, 0))
    cpu: _Bucket = field(default_factory=lambda: _Bucket(0, 0))
    cpu_used: float = 0.0  # seconds of delivery CPU so far (bench, tests)
    # -- backpressure: a session whose execs outrun its share is frozen until judged --
    held: bool = False
    held_since: float = 0.0
    held_new: int = 0  # hold episodes not yet reported
    held_s: float = 0.0  # time held, not yet reported
    held_reported: float = 0.0
    closing: bool = False  # never held again (the session is ending)

    def queued(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def set_budget(self, budget: Budget) -> None:
        self.budget = budget
        self.events = _Bucket(budget.events_per_s, budget.events_per_s)
        self.bytes = _Bucket(budget.bytes_per_s, budget.bytes_per_s)
        rate = budget.cpu_percent / 100.0
        self.cpu = _Bucket(rate, max(rate, 0.25))


SMALL_ARGV = 512  # bytes: judging an exec this small costs about a millisecond at most


def _lane(tr: _Tracked, info: ProcInfo) -> int:
    """Which of the session's queues an exec waits in; lower lanes are served first.

    0: programs the rules name (`ssh`, `nc`, miners: set by the guard), 1: small argv,
    2: the rest. A flood of big argv (costly to judge) then never delays a small exec,
    and a flood of small ones never delays `ssh`; each lane is bounded on its own.
    """
    if tr.urgent:
        names = {info.comm, os.path.basename(info.exe)}
        if info.argv:
            names.add(os.path.basename(info.argv[0]))
        if names & tr.urgent:
            return 0
    size = info.argv_bytes or sum(len(a) + 1 for a in info.argv)
    return 1 if size <= SMALL_ARGV else 2


def _cgroup_paths(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def netlink_available() -> tuple[bool, str]:
    """Whether the proc connector can be subscribed to (root / CAP_NET_ADMIN)."""
    try:
        sock = subscribe()
    except OSError as e:
        return False, f"proc connector unavailable ({e}); polling instead"
    sock.close()
    return True, "proc connector"


def _info_from(fields: list[object] | tuple[object, ...] | None
               ) -> Callable[[], ProcInfo] | None:
    if not fields:
        return None
    return lambda: ProcInfo(*fields)


def _spawn_reader() -> subprocess.Popen[bytes] | None:
    """The reader child process (see `procreader`), subscribed; None if it cannot be."""
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", procreader.__file__, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True)
    except OSError:
        return None
    assert child.stdout is not None
    buf = bytearray()
    if fdwait.ready(child.stdout.fileno(), fdwait.READ, 5.0):
        buf += os.read(child.stdout.fileno(), 65536)
    if procreader.frames(buf) == [("OK",)] and not buf:
        return child
    child.kill()
    child.wait()
    return None


class ProcessMonitor:
    """Records every exec in each registered session's process tree (one reader for all)."""

    def __init__(self, emit_for_session: EmitFor | None = None, on_exec: OnExec | None = None,
                 *, poll_interval: float = 0.05, force_poll: bool = False,
                 workers: int = WORKERS, reader_process: bool = True) -> None:
        self.emit_for_session = emit_for_session
        self.on_exec = on_exec
        self.poll_interval = poll_interval
        self.force_poll = force_poll
        self.workers = max(1, workers)
        self.mode = ""
        """"netlink" or "poll" once started."""
        self.lost_events = 0
        """Kernel overruns (ENOBUFS) seen so far, for all sessions."""
        self._sessions: dict[str, _Tracked] = {}
        self._owner: dict[int, str] = {}  # live pid -> session id
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)  # workers wait here for work
        self._idle = threading.Condition(self._lock)  # drain/unregister wait here
        self._ready: deque[str] = deque()  # sessions with events, round-robin
        self._busy = 0  # workers delivering right now
        self._rescan_wanted = False
        self._housekept = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self.reader_process = reader_process
        self._child: subprocess.Popen[bytes] | None = None
        self._sync_sent = 0
        self._synced = 0
        self._sync_cv = threading.Condition()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ProcessMonitor:
        if self._threads:
            return self
        if not self.force_poll:
            self._child = _spawn_reader() if self.reader_process else None
            if self._child is None:  # in-process fallback: same events, the GIL shared
                with contextlib.suppress(OSError):
                    self._sock = subscribe()
                    self._sock.settimeout(0.2)
        self.mode = "netlink" if self._child or self._sock else "poll"
        reader = (self._pipe_loop if self._child else
                  self._netlink_loop if self._sock else self._poll_loop)
        self._threads = [threading.Thread(target=reader, name="sandbox-procmon", daemon=True)]
        self._threads += [
            threading.Thread(target=self._worker, name=f"sandbox-procmon-out{i}", daemon=True)
            for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()  # the reader exits on EOF
            try:
                child.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for t in self._threads:
            t.join(timeout=2)
        if child is not None and child.stdout is not None:
            child.stdout.close()
        if self._sock is not None:
            self._sock.close()

    def register(self, session_id: str, root_pid: int | None = None,
                 cgroup: SessionCgroup | None = None, *, emit: Emit | None = None,
                 budget: Budget | None = None) -> None:
        """Watch a session. Call again to add the root pid after registering the cgroup.

        Processes already running are recorded at once (source "scan").
        """
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                tr = self._sessions[session_id] = _Tracked(session_id, root_pid, cgroup, emit)
                tr.set_budget(budget or Budget())
            elif budget is not None:
                tr.set_budget(budget)
            tr.root_pid = root_pid or tr.root_pid
            tr.cgroup = cgroup or tr.cgroup
            tr.emit = emit or tr.emit
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
        self.release(session_id)  # thawed, and drained at full speed from here
        with self._lock:
            tr.paused_until = 0.0
            self._schedule(tr, time.monotonic())
        self._sync(0.5)
        self._wait_idle([tr], 1.0)
        with self._lock:
            self._sessions.pop(session_id, None)
            for pid in tr.live:
                if self._owner.get(pid) == session_id:
                    del self._owner[pid]
            if tr.queued():
                tr.lost["unregistered"] += tr.queued()
                tr.lost_total += tr.queued()
                for lane in tr.lanes:
                    lane.clear()
        self._report(tr, time.monotonic(), force=True)

    def set_urgent(self, session_id: str, names: frozenset[str]) -> None:
        """Program names whose execs a session's rules judge first (see `_lane`)."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is not None:
                tr.urgent = frozenset(names)

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
        child = self._child
        if child is None:
            return 0.0
        try:
            with open(f"/proc/{child.pid}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stats(self, session_id: str) -> dict[str, float]:
        """Delivery figures of a live session: CPU seconds used, events queued, lost."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                return {}
            return {"cpu_s": tr.cpu_used, "queued": tr.queued(), "lost": tr.lost_total}

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
            waiting = {tr.cgroup.rel_path: tr for tr in self._sessions.values()
                       if tr.cgroup and (not tr.live or tr.joining)}
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
            which = _lane(tr, info)
            lane = tr.lanes[which]
            # big argv: a quarter of the room (each costs up to ~0.1 s to judge)
            cap = tr.budget.queue if which < 2 else max(1, tr.budget.queue // 4)
            if len(lane) >= cap:
                tr.lost["queue_full"] += 1
                tr.lost_total += 1
                return
            lane.append((info, source))
            now = time.monotonic()
            hold = (tr.cgroup is not None and not tr.held and not tr.closing
                    and len(lane) >= cap * HOLD_AT)
            if hold:
                tr.held, tr.held_since = True, now
                tr.held_new += 1
            self._schedule(tr, now)
        if hold:
            assert tr.cgroup is not None
            tr.cgroup.hold(True)

    def _release_if_caught_up(self, tr: _Tracked, now: float) -> bool:
        """Under the lock: True when a held session may run again (the caller thaws)."""
        if not tr.held:
            return False
        caps = (tr.budget.queue, tr.budget.queue, max(1, tr.budget.queue // 4))
        if tr.closing or (tr.paused_until <= now and all(
                len(lane) <= cap * RELEASE_AT for lane, cap in zip(tr.lanes, caps, strict=True))):
            tr.held = False
            tr.held_s += now - tr.held_since
            return True
        return False

    def release(self, session_id: str) -> None:
        """Thaw a held session for good (it is being killed: signals must land)."""
        with self._lock:
            tr = self._sessions.get(session_id)
            if tr is None:
                return
            tr.closing = True
            thaw = self._release_if_caught_up(tr, time.monotonic())
        if thaw and tr.cgroup is not None:
            tr.cgroup.hold(False)

    def _schedule(self, tr: _Tracked, now: float) -> None:
        if not tr.scheduled and tr.queued() and tr.paused_until <= now:
            tr.scheduled = True
            self._ready.append(tr.session_id)
            self._cv.notify()

    # -- netlink ------------------------------------------------------------------------

    def _pipe_loop(self) -> None:
        """Apply the reader process's frames (see `procreader`) as they come."""
        child = self._child
        assert child is not None and child.stdout is not None
        fd = child.stdout.fileno()
        buf = bytearray()
        while not self._stop.is_set():
            if not fdwait.ready(fd, fdwait.READ, 0.2):
                continue
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:  # the reader died: events from now on are not seen
                if not self._stop.is_set():
                    self._overrun()
                    self._reader_died()
                return
            buf += chunk
            for rec in procreader.frames(buf):
                kind = rec[0]
                if kind == "F":
                    self._on_fork(rec[1], rec[2])
                elif kind == "E":
                    self._on_exec(rec[1], _info_from(rec[2]))
                elif kind == "X":
                    self._on_exit(rec[1])
                elif kind == "L":
                    self._overrun()
                elif kind == "S":
                    with self._sync_cv:
                        self._synced = max(self._synced, rec[1])
                        self._sync_cv.notify_all()

    def _reader_died(self) -> None:
        """Fall back to reading the proc connector in this process."""
        with contextlib.suppress(OSError):
            self._sock = subscribe()
            self._sock.settimeout(0.2)
            self._child = None
            threading.Thread(target=self._netlink_loop, name="sandbox-procmon",
                             daemon=True).start()

    def _sync(self, timeout: float) -> None:
        """Wait until the reader process has handed over every event the kernel queued
        before now (a no-op in-process: events are read as they come)."""
        child = self._child
        if child is None or child.stdin is None:
            return
        with self._sync_cv:
            self._sync_sent += 1
            token = self._sync_sent
        try:
            child.stdin.write(f"{token}\n".encode())
            child.stdin.flush()
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        with self._sync_cv:
            while self._synced < token and time.monotonic() < deadline:
                self._sync_cv.wait(max(0.0, min(0.05, deadline - time.monotonic())))

    def _netlink_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # the kernel dropped events: tell, look again
                    self._overrun()
                    continue
                if self._stop.is_set():
                    return
                raise
            for what, a, b in parse(data):
                if what == EV_FORK:
                    self._on_fork(a, b)
                elif what == EV_EXEC:
                    self._on_exec(a, None)
                else:
                    self._on_exit(a)

    def _overrun(self) -> None:
        """Events were lost and nobody knows whose: every live session is told (in
        proc.lost) and rescanned, by a delivery thread, not this one."""
        with self._cv:
            self.lost_events += 1
            for tr in self._sessions.values():
                tr.lost["netlink_overrun"] += 1
                tr.lost_total += 1
            self._rescan_wanted = True
            self._cv.notify()

    def _on_fork(self, ppid: int, child: int) -> None:
        with self._lock:
            sid = self._owner.get(ppid)
            if sid is not None and sid in self._sessions:
                self._adopt(self._sessions[sid], child)

    def _on_exec(self, pid: int, info: Callable[[], ProcInfo] | None) -> None:
        """`info` is what the reader process read at the exec; None: read it now."""
        with self._lock:
            tr = self._attribute(pid) if self._sessions else None
        if tr is not None:
            self._record(tr, info() if info is not None else proctree.info(pid), "netlink")

    def _on_exit(self, pid: int) -> None:
        with self._lock:
            sid = self._owner.pop(pid, None)
            if sid is not None and sid in self._sessions:
                self._sessions[sid].live.discard(pid)
                self._sessions[sid].seen.pop(pid, None)

    def _rescan(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for tr in sessions:
            self._scan(tr, "resync")

    # -- polling ------------------------------------------------------------------------

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
        pids = set(tr.cgroup.pids()) if tr.cgroup else set()
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

    # -- delivery -----------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            tr: _Tracked | None = None
            item: tuple[ProcInfo, str] | None = None
            with self._cv:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if now - self._housekept >= _HOUSEKEEP_S:
                        self._housekept = now
                        break
                    if self._ready:
                        tr = self._sessions.get(self._ready.popleft())
                        if tr is not None and tr.queued():
                            item = next(lane for lane in tr.lanes if lane).popleft()
                            break
                        if tr is not None:
                            tr.scheduled = False
                        tr = None
                        continue
                    self._cv.wait(_HOUSEKEEP_S / 2)
                if self._stop.is_set():
                    return
                self._busy += 1
            used = 0.0
            try:
                if item is None:
                    self._housekeep()
                else:
                    assert tr is not None
                    t0 = time.thread_time()
                    self._deliver(tr, *item)
                    used = time.thread_time() - t0
            finally:
                thaw = False
                with self._cv:
                    self._busy -= 1
                    if tr is not None:
                        now = time.monotonic()
                        tr.cpu_used += used
                        # An ending session's last events are drained at full speed:
                        # nothing new can come, and they would be lost otherwise.
                        pause = tr.cpu.charge(used, now)
                        tr.paused_until = 0.0 if tr.closing else now + pause
                        tr.scheduled = False
                        if tr.session_id in self._sessions:
                            self._schedule(tr, now)
                        thaw = self._release_if_caught_up(tr, now)
                    self._idle.notify_all()
                if thaw and tr is not None and tr.cgroup is not None:
                    tr.cgroup.hold(False)

    def _housekeep(self) -> None:
        """Runs on a delivery thread every few tenths of a second: resume sessions whose
        CPU share came back, record pending loss and drop counts, rescan after an
        overrun."""
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
            thaw = []
            for tr in sessions:
                self._schedule(tr, now)
                if self._release_if_caught_up(tr, now):
                    thaw.append(tr)
            rescan, self._rescan_wanted = self._rescan_wanted, False
        for tr in thaw:
            if tr.cgroup is not None:
                tr.cgroup.hold(False)
        for tr in sessions:
            self._report(tr, now)
        if rescan:
            self._rescan()

    def _emit_for(self, tr: _Tracked) -> Emit | None:
        return tr.emit or (self.emit_for_session(tr.session_id)
                           if self.emit_for_session else None)

    def _report(self, tr: _Tracked, now: float, *, force: bool = False) -> None:
        """Record `proc.lost` and `record.dropped` for what is pending (at most once per
        `REPORT_EVERY_S` each, unless forced)."""
        lost: dict[str, int] = {}
        dropped: dict[str, int] = {}
        held: tuple[int, float] | None = None
        with self._lock:
            if tr.held_new and (force or now - tr.held_reported >= REPORT_EVERY_S):
                held = (tr.held_new, tr.held_s)
                tr.held_new, tr.held_s = 0, 0.0
                tr.held_reported = now
            if tr.lost and (force or now - tr.lost_reported >= REPORT_EVERY_S):
                lost, tr.lost = dict(tr.lost), Counter()
                tr.lost_reported = now
            if tr.dropped and (force or now - tr.dropped_reported >= REPORT_EVERY_S):
                dropped, tr.dropped = dict(tr.dropped), Counter()
                size, tr.dropped_bytes = tr.dropped_bytes, 0
                window = now - tr.dropped_since
                tr.dropped_reported = now
        emit = self._emit_for(tr)
        if emit is None:
            return
        try:  # a broken consumer must not stop recording
            if lost:
                emit("proc.lost", {
                    "lost": sum(lost.values()), **lost, "total": tr.lost_total,
                    "reason": "exec events dropped before they were judged: "
                              + ", ".join(sorted(lost))}, severity="warning")
            if dropped:
                emit("record.dropped", {
                    "counts": dropped, "bytes": size, "window_s": round(window, 3),
                    "events_per_s": tr.budget.events_per_s,
                    "bytes_per_s": tr.budget.bytes_per_s,
                    "reason": "over the session's record budget: summarised, still judged"})
            if held:
                emit("record.backpressure", {
                    "holds": held[0], "held_s": round(held[1], 3),
                    "cpu_percent": tr.budget.cpu_percent,
                    "reason": "the session's execs outran its share of the recorder: it was "
                              "frozen until they were judged (none lost)"})
        except Exception as e:
            log.warning("sandbox: session %s: recording lost/dropped counts: %s",
                        tr.session_id, e)

    def _deliver(self, tr: _Tracked, info: ProcInfo, source: str) -> None:
        detail = {**info.detail(), "source": source}
        size = 160 + sum(len(a) + 3 for a in info.argv) + len(info.exe)
        now = time.monotonic()
        with self._lock:
            keep = tr.events.take(1, now) and tr.bytes.take(size, now)
            if not keep:
                if not tr.dropped:
                    tr.dropped_since = now
                tr.dropped["proc.exec"] += 1
                tr.dropped_bytes += size
        emit = self._emit_for(tr)
        try:  # a broken consumer must not stop recording
            if keep and emit is not None:
                emit("proc.exec", detail)
        except Exception as e:
            log.warning("sandbox: session %s: recording an exec: %s", tr.session_id, e)
        if not keep and now - tr.dropped_reported >= REPORT_EVERY_S:
            self._report(tr, now)
        try:
            if self.on_exec is not None:
                self.on_exec(tr.session_id, info)
        except Exception as e:
            log.warning("sandbox: session %s: judging an exec: %s", tr.session_id, e)

    def _wait_idle(self, sessions: list[_Tracked] | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._idle:
            while time.monotonic() < deadline:
                pending = sessions if sessions is not None else list(self._sessions.values())
                if not any(tr.queued() or tr.scheduled for tr in pending) and (
                        sessions is not None or not self._busy):
                    return
                self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def settle(self, session_id: str, timeout: float = 0.5) -> None:
        """Wait (bounded) until the execs already handed over for one session are
        judged, so a command's exec verdicts land in that command's result.

        No round trip to the reader (that costs ~0.3 ms a command): by the time bash
        prints its end marker the reader, at real-time priority, has almost always
        handed the command's execs over; one still in flight lands in the next result.
        """
        with self._lock:
            tr = self._sessions.get(session_id)
            busy = tr is not None and (tr.queued() or tr.scheduled)
        if busy:
            assert tr is not None
            self._wait_idle([tr], timeout)

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until the events the kernel has queued so far are delivered (tests)."""
        deadline = time.monotonic() + timeout
        self._sync(timeout)
        self._wait_idle(None, max(0.0, deadline - time.monotonic()))
