"""What every row shares: statistics, result lines, goals, deadlines and the bench's own dirs.

A row is a function `(ctx) -> Row`. A row reports `Line`s: one figure (median and spread
over repeated samples) or, when it cannot be measured here, the reason instead of a number.
A line may name a baseline line of the same row; the ratio is taken from the two medians of
the same run, and a goal line says met or missed with that ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

BENCH_ROOT = Path("/var/lib/sandbox-bench")  # not /tmp: the jail's private /tmp hides it


@dataclass(frozen=True)
class Stat:
    """Median and spread of repeated samples, in the line's unit."""

    median: float
    p10: float
    p90: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "n": self.n}


def stat(samples: list[float]) -> Stat:
    """Median and p10/p90 (nearest rank) of `samples`; raises ValueError when empty."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    return Stat(statistics.median(s), rank(0.10), rank(0.90), len(s))


@dataclass
class Goal:
    """A target for one line: `ratio <= limit` (or >=), or an absolute `value <= limit`."""

    text: str
    check: Callable[[float], bool]
    on: str = "ratio"  # "ratio" or "value": what `check` is applied to


@dataclass
class Line:
    """One figure of a row, or the reason it has none."""

    name: str
    unit: str
    stat: Stat | None = None
    reason: str = ""  # why there is no number (set when stat is None)
    note: str = ""
    baseline: str | None = None  # name of another line of the same row
    ratio_kind: str = "x"  # "x": this/baseline; "inv": baseline/this (speedups); "%": this/base
    goal: Goal | None = None
    ratio: float | None = None
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "unit": self.unit,
            "stat": self.stat.as_dict() if self.stat else None,
            "reason": self.reason or None, "note": self.note or None,
            "baseline": self.baseline, "ratio": self.ratio, "ratio_kind": self.ratio_kind,
            "goal": self.goal.text if self.goal else None, "met": self.met,
        }


@dataclass
class Row:
    """One numbered row of the table."""

    key: str
    title: str
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    num: int = 0  # the row's number in the full table (stable under --only)

    def add(self, line: Line) -> Line:
        self.lines.append(line)
        return line

    def get(self, name: str) -> Line | None:
        return next((ln for ln in self.lines if ln.name == name), None)

    def finish(self) -> Row:
        """Fill ratios and goal verdicts from the medians of this run."""
        for ln in self.lines:
            base = self.get(ln.baseline) if ln.baseline else None
            if ln.stat and base and base.stat and base.stat.median > 0 and ln.stat.median > 0:
                if ln.ratio_kind == "inv":
                    ln.ratio = base.stat.median / ln.stat.median
                elif ln.ratio_kind == "%":
                    ln.ratio = 100.0 * ln.stat.median / base.stat.median
                else:
                    ln.ratio = ln.stat.median / base.stat.median
            if ln.goal and ln.stat:
                value = ln.ratio if ln.goal.on == "ratio" else ln.stat.median
                ln.met = None if value is None else bool(ln.goal.check(value))
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"num": self.num, "key": self.key, "title": self.title,
                "seconds": round(self.seconds, 2),
                "lines": [ln.as_dict() for ln in self.lines], "notes": self.notes}


def unavailable(name: str, unit: str, reason: str, **kw: Any) -> Line:
    return Line(name=name, unit=unit, reason=reason, **kw)


class Deadline:
    """A time bound for a loop: `while dl.left() and i < n`."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())


@dataclass
class Ctx:
    """One bench run: options, its private state dir and workspaces, the agent user."""

    quick: bool
    sessions: int
    root: Path
    agent_uid: int | None
    agent_gid: int | None
    python: str
    extra: dict[str, Any] = field(default_factory=dict)

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def workspace(self, name: str | None = None) -> Path:
        """A fresh workspace the agent owns (firejail makes only the owner's dirs writable)."""
        path = self.root / "ws" / (name or uuid.uuid4().hex[:8])
        path.mkdir(parents=True, exist_ok=True)
        if self.agent_uid is not None and self.agent_gid is not None:
            os.chown(path.parent, self.agent_uid, self.agent_gid)
            os.chown(path, self.agent_uid, self.agent_gid)
        return path


def make_ctx(quick: bool, sessions: int, python: str) -> Ctx:
    """Create the run's dirs and point the runtime's store at them (SANDBOX_STATE_DIR)."""
    root = BENCH_ROOT / (time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4])
    root.mkdir(parents=True, mode=0o755)
    os.chmod(BENCH_ROOT, 0o755)
    uid = gid = None
    if os.geteuid() == 0:
        from sandbox.jail.users import ensure_agent_user

        agent = ensure_agent_user()
        uid, gid = agent.uid, agent.gid
    os.environ["SANDBOX_STATE_DIR"] = str(root / "state")
    os.environ.pop("SANDBOX_DB", None)
    return Ctx(quick=quick, sessions=sessions, root=root, agent_uid=uid, agent_gid=gid,
               python=python)


def remove_ctx(ctx: Ctx) -> None:
    shutil.rmtree(ctx.root, ignore_errors=True)


def run_async(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run `coro` on a fresh event loop, bounded by `timeout`; the loop and its default
    executor are shut down whatever happens."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
