"""Every exec in the session's process tree, recorded from outside (proc connector).

One monitor serves every session of the process; each session gets its own queue, its
share of the delivery threads and its budget from the profile's `[recording]`."""

from __future__ import annotations

from collections.abc import Callable

from .. import supervisor
from ..jail.firejail import JailSpec
from ..monitor.procmon import Budget, ProcessMonitor
from ..monitor.proctree import ProcInfo
from . import Part


class _Monitor:
    """The process's one exec monitor and the exec callback of each session it serves
    (the guard's): a shared service of the supervisor."""

    def __init__(self) -> None:
        self.on_exec: dict[str, Callable[[ProcInfo], None]] = {}  # session id -> callback
        self.monitor = ProcessMonitor(on_exec=self._dispatch).start()

    def _dispatch(self, session_id: str, info: ProcInfo) -> None:
        fn = self.on_exec.get(session_id)
        if fn is not None:
            fn(info)

    def stop(self) -> None:
        self.monitor.stop()


def _shared() -> _Monitor:
    return supervisor.current().shared("exec monitor", _Monitor, _Monitor.stop)


def monitor() -> ProcessMonitor:
    return _shared().monitor


class ProcsPart(Part):
    name = "procs"

    def before_jail(self, spec: JailSpec) -> JailSpec:
        limits = self.session.hooks.limits
        cgroup = limits.cgroup if limits is not None else None
        rec = self.session.profile.recording
        budget = Budget(events_per_s=rec.max_events_per_s,
                        bytes_per_s=rec.max_event_bytes_per_s,
                        cpu_percent=rec.max_monitor_cpu_percent)
        # Registered before the spawn, so firejail's own first exec is already seen.
        monitor().register(self.session.id, None, cgroup, emit=self.session.emit,
                           budget=budget)
        return spec

    def jail_started(self, jail_pid: int) -> None:
        monitor().register(self.session.id, jail_pid)

    def on_exec(self, fn: Callable[[ProcInfo], None],
                urgent: frozenset[str] = frozenset()) -> None:
        """`fn` judges every exec; execs of the `urgent` program names go first."""
        _shared().on_exec[self.session.id] = fn
        monitor().set_urgent(self.session.id, urgent)

    def joining(self, delta: int, pid: int | None = None) -> None:
        """An exec enters the jail from outside: see `ProcessMonitor.joining`."""
        monitor().joining(self.session.id, delta, pid)

    def settle(self) -> None:
        """The execs of the command that just ended are judged (bounded wait)."""
        monitor().settle(self.session.id)

    def known_pids(self) -> set[int]:
        return monitor().known_pids(self.session.id)

    def release(self) -> None:
        """Thaw the session if the monitor holds it: it is being killed."""
        monitor().release(self.session.id)

    def teardown(self) -> None:
        # Unregister first: what is still queued is delivered (and judged) before the
        # guard's callback goes.
        monitor().unregister(self.session.id)
        _shared().on_exec.pop(self.session.id, None)
