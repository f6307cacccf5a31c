"""`ResourceSampler`: each session's cgroup usage into the store, and limit breaches.

One thread per process reads every registered session's cgroup every `interval` seconds,
and at once when the kernel says memory is near its limit or ran out (`memory_watch`:
v1 eventfds, v2 memory.events), since what fills memory can end a session in well
under an interval. `finish` takes a last reading when the session ends, before its
cgroup is removed: the kernel's counters (OOM kills, failed forks, CPU time) outlive
the processes, so a limit hit that ended the session is still a breach.

What each reading means (`resource.sample`, `resource.breach` and when) is decided by
`resource_rules.ResourceRules`; this module is the loop that takes the readings: the
thread, the epoll on the memory watch descriptors, and the last reading at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Unpack

from .. import supervisor
from ..events import Emit
from ..jail.cgroups import SessionCgroup
from .resource_rules import Readings, ResourceRules, RulesOptions

WATCH_FRACTIONS = (0.5, 0.75, 0.9)
"""v1: usage thresholds (of the limit) that wake the sampler at once, on the way up."""
MIN_EVENT_GAP_S = 0.02
"""At most one woken reading per session this often (an OOM loop signals constantly)."""

log = logging.getLogger("sandbox")


@dataclass
class _State:
    """What the loop keeps for one session: the rules' memory, and its watch descriptors."""

    readings: Readings = field(default_factory=Readings)
    lock: threading.Lock = field(default_factory=threading.Lock)  # thread vs `finish`
    fds: list[int] = field(default_factory=list)  # memory_watch descriptors
    woken: float = -1e18  # last reading taken because a descriptor fired
    cpu_ns: int = -1  # the group's CPU time at the last full reading
    full: float = -1e18  # when that was


class ResourceSampler:
    """Samples each session's cgroup; emits resource.sample and resource.breach."""

    def __init__(self, interval: float = 1.0, **rules: Unpack[RulesOptions]) -> None:
        """`interval`: seconds between reads; `rules`: the breach and sample settings
        (see `ResourceRules`)."""
        self.interval = interval
        self.rules = ResourceRules(**rules)
        self._groups: dict[str, tuple[SessionCgroup, Emit, _State]] = {}
        self._by_fd: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # stop()
        self._poll.register(self._wake, select.EPOLLIN)

    def add(self, session_id: str, cgroup: SessionCgroup, emit: Emit) -> None:
        state = _State()
        with self._lock:
            self._groups[session_id] = (cgroup, emit, state)
        self._watch(session_id, cgroup, state)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="sandbox-resources",
                                            daemon=True)
            self._thread.start()

    def _watch(self, session_id: str, cgroup: SessionCgroup, state: _State) -> None:
        """The OOM watch now; v1's usage thresholds from a thread, off the session's start:
        the kernel waits out an RCU grace period for each one registered (~10 ms apiece
        here, 3 of them: a third of a start)."""
        self._register(session_id, state, cgroup.memory_watch(()))
        if cgroup.version == 1:
            supervisor.current().executor("memory thresholds", 4).submit(
                self._watch_thresholds, session_id, cgroup, state)

    def _watch_thresholds(self, session_id: str, cgroup: SessionCgroup, state: _State
                          ) -> None:
        fds = cgroup.memory_watch(WATCH_FRACTIONS, oom=False)
        with state.lock:
            with self._lock:
                entry = self._groups.get(session_id)
            if entry is None or entry[2] is not state or self._stop.is_set():
                for fd in fds:  # ended (or stopped) meanwhile: nothing to watch
                    os.close(fd)
                return
            self._register(session_id, state, fds)

    def _register(self, session_id: str, state: _State, fds: list[int]) -> None:
        for fd in fds:
            try:
                self._poll.register(fd, select.EPOLLIN | select.EPOLLPRI)
            except OSError:
                os.close(fd)
                continue
            state.fds.append(fd)
            with self._lock:
                self._by_fd[fd] = session_id

    def _unwatch(self, state: _State) -> None:
        for fd in state.fds:
            with self._lock:
                self._by_fd.pop(fd, None)
            with contextlib.suppress(OSError, ValueError):
                self._poll.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        state.fds = []

    def remove(self, session_id: str) -> None:
        with self._lock:
            entry = self._groups.pop(session_id, None)
        if entry is not None:
            with entry[2].lock:
                self._unwatch(entry[2])

    def finish(self, session_id: str) -> None:
        """The session ends: one last reading (breaches, and a final resource.sample),
        then forget it. Call it before the cgroup is removed: its counters are the only
        record of a hit that ended the session before the next tick."""
        with self._lock:
            entry = self._groups.pop(session_id, None)
        if entry is None:
            return
        cgroup, emit, state = entry
        with state.lock:
            self._unwatch(state)
            try:
                reading = cgroup.sample()
            except Exception as e:  # the cgroup went already: nothing left to read
                log.debug("sandbox: last sample of %s: %s", cgroup, e)
                return
            self.rules.check(reading, emit, state.readings, final=True)

    def stop(self) -> None:
        if self._stop.is_set():
            return  # stopped (and closed) already: a closed fd's number may be reused
        self._stop.set()
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():
                return  # still polling: its descriptors stay open
        with self._lock:
            states = [state for _, _, state in self._groups.values()]
        for state in states:
            with state.lock:
                self._unwatch(state)
        with contextlib.suppress(OSError):
            self._poll.close()
            os.close(self._wake)

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.interval
        while not self._stop.is_set():
            try:
                ready = self._poll.poll(max(0.0, next_tick - time.monotonic()))
            except InterruptedError:
                ready = []
            woken: set[str] = set()
            for fd, _mask in ready:
                self._drain(fd)
                with self._lock:
                    sid = self._by_fd.get(fd)
                if sid is not None:
                    woken.add(sid)
            if self._stop.is_set():
                break
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.interval
                self.tick()
            else:
                for sid in woken:
                    self.tick_one(sid, woken=True)

    @staticmethod
    def _drain(fd: int) -> None:
        """Clear what made `fd` ready: an eventfd's count, or (v2) the file's change."""
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)  # fails (ESPIPE) on an eventfd: that is fine
        with contextlib.suppress(OSError):
            os.read(fd, 4096)

    def tick(self) -> None:
        """Sample every session once (the thread calls this; tests may too)."""
        with self._lock:
            sids = list(self._groups)
        for sid in sids:
            self.tick_one(sid)

    def tick_one(self, session_id: str, *, woken: bool = False) -> None:
        with self._lock:
            entry = self._groups.get(session_id)
        if entry is None:
            return
        cgroup, emit, state = entry
        with state.lock:
            if session_id not in self._groups:
                return  # finished meanwhile: its last reading is taken
            now = time.monotonic()
            if woken and now - state.woken < MIN_EVENT_GAP_S:
                return
            if woken:
                state.woken = now
            try:
                if not woken:
                    # Nothing ran since the last reading: nothing it judges moved (memory,
                    # pids, forks and tmpfs pages all take CPU in the group), so one file
                    # is read, not ten, until a sample row is due. With 256 idle
                    # sandboxes this was a third of a core.
                    busy = cgroup.cpu_ns()
                    if busy == state.cpu_ns and now - state.full < self.rules.sample_every:
                        return
                    state.cpu_ns = busy
                state.full = now
                self.rules.check(cgroup.sample(), emit, state.readings)
            except Exception as e:  # a vanished cgroup ends its own session
                log.debug("sandbox: sampling %s: %s", cgroup, e)
