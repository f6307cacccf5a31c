"""One session's exec queue: its lanes, its budget, and the backpressure hold.

Pure state under the monitor's lock (no threads, no I/O but the cgroup freeze the caller
applies): `delivery` serves these queues, `tracker` fills them.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from ...events import Emit
from ...jail.cgroups import SessionCgroup
from ..proctree import ProcInfo

SMALL_ARGV = 512  # bytes: judging an exec this small costs about a millisecond at most
HOLD_AT = 0.5  # a lane this full freezes the session's cgroup (its execs wait, none lost)
RELEASE_AT = 0.125  # ...and it thaws once every lane is this empty and its share is back


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


class Bucket:
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
class SessionQueue:
    """A session's execs waiting for delivery, and what they may cost (under the lock)."""

    session_id: str
    cgroup: SessionCgroup | None  # frozen while the session is held
    emit: Emit | None
    budget: Budget = field(default_factory=Budget)
    lanes: tuple[deque[tuple[ProcInfo, str]], ...] = field(
        default_factory=lambda: (deque(), deque(), deque()))  # see `lane_of`
    urgent: frozenset[str] = frozenset()  # program names rules look for (ssh, nc, ...)
    scheduled: bool = False  # in the ready queue or being delivered by a worker
    paused_until: float = 0.0  # over its CPU budget until then
    lost: Counter[str] = field(default_factory=Counter)  # not yet reported in proc.lost
    lost_total: int = 0
    lost_reported: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)  # not yet in record.dropped
    dropped_bytes: int = 0
    dropped_since: float = 0.0
    dropped_reported: float = 0.0
    events: Bucket = field(default_factory=lambda: Bucket(0, 0))
    bytes: Bucket = field(default_factory=lambda: Bucket(0, 0))
    cpu: Bucket = field(default_factory=lambda: Bucket(0, 0))
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
        self.events = Bucket(budget.events_per_s, budget.events_per_s)
        self.bytes = Bucket(budget.bytes_per_s, budget.bytes_per_s)
        rate = budget.cpu_percent / 100.0
        self.cpu = Bucket(rate, max(rate, 0.25))

    def lose(self, why: str, n: int = 1) -> None:
        self.lost[why] += n
        self.lost_total += n

    def lane_of(self, info: ProcInfo) -> int:
        """Which of the session's queues an exec waits in; lower lanes are served first.

        0: programs the rules name (`ssh`, `nc`, miners: set by the guard), 1: small argv,
        2: the rest. A flood of big argv (costly to judge) then never delays a small exec,
        and a flood of small ones never delays `ssh`; each lane is bounded on its own.
        """
        if self.urgent:
            names = {info.comm, os.path.basename(info.exe)}
            if info.argv:
                names.add(os.path.basename(info.argv[0]))
            if names & self.urgent:
                return 0
        size = info.argv_bytes or sum(len(a) + 1 for a in info.argv)
        return 1 if size <= SMALL_ARGV else 2

    def _caps(self) -> tuple[int, int, int]:
        # big argv: a quarter of the room (each costs up to ~0.1 s to judge)
        return (self.budget.queue, self.budget.queue, max(1, self.budget.queue // 4))

    def push(self, info: ProcInfo, source: str, now: float) -> tuple[bool, bool]:
        """Queue an exec: (queued, hold), hold when the caller must freeze the cgroup now.
        A full lane loses the exec (counted in `proc.lost`)."""
        which = self.lane_of(info)
        lane, cap = self.lanes[which], self._caps()[which]
        if len(lane) >= cap:
            self.lose("queue_full")
            return False, False
        lane.append((info, source))
        hold = (self.cgroup is not None and not self.held and not self.closing
                and len(lane) >= cap * HOLD_AT)
        if hold:
            self.held, self.held_since = True, now
            self.held_new += 1
        return True, hold

    def pop(self) -> tuple[ProcInfo, str]:
        return next(lane for lane in self.lanes if lane).popleft()

    def caught_up(self, now: float) -> bool:
        """True when a held session may run again (the caller thaws)."""
        if not self.held:
            return False
        if self.closing or (self.paused_until <= now and all(
                len(lane) <= cap * RELEASE_AT
                for lane, cap in zip(self.lanes, self._caps(), strict=True))):
            self.held = False
            self.held_s += now - self.held_since
            return True
        return False

    def within_budget(self, size: int, now: float) -> bool:
        """Whether one more `proc.exec` row of `size` bytes may be recorded; if not, it
        is counted for `record.dropped`."""
        keep = self.events.take(1, now) and self.bytes.take(size, now)
        if not keep:
            if not self.dropped:
                self.dropped_since = now
            self.dropped["proc.exec"] += 1
            self.dropped_bytes += size
        return keep
