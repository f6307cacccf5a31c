"""Rows 5 and 6: kill latency, and detection latency (attempt -> session killed).

Kill: a session with a small tree (bash + two background sleeps) is killed through the
API (`Sandbox.kill()`), through the CLI (`sandbox kill ID`, a new Python process), and
through the store's control request (what the CLI and TUI write), and /proc is polled
until every process of the session is gone (zombies count as gone: dead, only unreaped).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

from sandbox import Sandbox, SandboxError, Store

from .boxes import session_pids, wait_gone
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable
from .netcheck import network_problem

MS = 1000.0
GOAL_KILL = Goal("<= 200 ms", lambda v: v <= 200.0, on="value")


def _one_kill(ctx: Ctx, how: Callable[[Sandbox], None]) -> float | None:
    sb = Sandbox(workdir=ctx.workspace())
    try:
        sb.start()
        sb.run("sleep 1000 & sleep 1000 & true")
        pids = session_pids(sb)
        t0 = time.perf_counter()
        how(sb)
        gone = wait_gone(pids, timeout=5.0)
        return None if gone is None else time.perf_counter() - t0
    finally:
        sb.close()


def kill(ctx: Ctx) -> Row:
    row = Row("kill", "Kill latency (request to every process gone)")
    reps = ctx.reps(10, 3)
    dl = Deadline(120)
    cli = [sys.executable, "-m", "sandbox", "kill"]
    env = dict(os.environ)

    def api(sb: Sandbox) -> None:
        sb.kill("bench")

    def via_cli(sb: Sandbox) -> None:
        subprocess.run([*cli, sb.id], env=env, capture_output=True, timeout=30, check=False)

    def via_store(sb: Sandbox) -> None:
        Store().request_kill(sb.id, "bench")

    ways = {"Sandbox.kill() (API)": api, "`sandbox kill ID` (CLI, new process)": via_cli,
            "control request in the store (what CLI/TUI write)": via_store}
    samples: dict[str, list[float]] = {k: [] for k in ways}
    failed: dict[str, int] = dict.fromkeys(ways, 0)
    i = 0
    while i < reps and dl.left():
        for name, how in ways.items():
            took = _one_kill(ctx, how)
            if took is None:
                failed[name] += 1
            else:
                samples[name].append(took * MS)
        i += 1
    tui_name = "TUI: confirm keypress (`k`, `y`) to processes gone"
    tui = _tui_kill(ctx)
    if isinstance(tui, str):
        row.add(unavailable(tui_name, "ms", tui, goal=GOAL_KILL))
    else:
        row.add(Line(tui_name, "ms", stat(tui), goal=GOAL_KILL))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sandbox.cli"], check=False)
    interp = (time.perf_counter() - t0) * MS
    for name in ways:
        if samples[name]:
            row.add(Line(name, "ms", stat(samples[name]), goal=GOAL_KILL))
        else:
            row.add(unavailable(name, "ms", f"processes still alive after 5 s ({failed[name]}x)",
                                goal=GOAL_KILL))
        if failed[name]:
            row.notes.append(f"{name}: {failed[name]} kill(s) left processes after 5 s")
    row.notes.append(f"the CLI figure includes starting Python and importing the CLI "
                     f"(~{interp:.0f} ms here, measured once)")
    if network_problem():
        row.notes.append("allowlist-mode teardown (netns, veth, nft) not measured: "
                         f"{network_problem()}")
    return row


def _tui_kill(ctx: Ctx) -> list[float] | str:
    """The TUI's own kill benchmark (tui/bench_kill.py), run headless in a subprocess."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "sandbox_tui.bench_kill", "--trials", str(ctx.reps(5, 2))],
            capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return "the TUI kill benchmark did not finish in 300 s"
    found = re.findall(r"processes gone\s+([0-9.]+) ms", p.stdout)
    if not found:
        return "the TUI kill benchmark printed no figure: " + (p.stdout + p.stderr)[-200:]
    return [float(v) for v in found]


def _one_detect(ctx: Ctx, attempt: str, reasons: list[str]) -> float | str:
    """Seconds from sending the attempt to the session killed, or why not."""
    sb = Sandbox(profile="strict", workdir=ctx.workspace())
    try:
        sb.start()
        sb.run("true")
        t0 = time.perf_counter()
        alerts: list[object] = []
        with contextlib.suppress(SandboxError):  # SessionClosed: killed while running
            alerts = list(sb.run(attempt, timeout=10).alerts)
        dl = Deadline(3.0)
        while dl.left() and sb.state != "killed":
            time.sleep(0.002)
        if sb.state == "killed":
            took = time.perf_counter() - t0
            reasons.append(str(sb._session.reason))
            return took
        if alerts:
            return f"{len(alerts)} alert(s) but the session was not killed within 3 s"
        return f"guard not integrated yet (no alert, session still {sb.state} after 3 s)"
    finally:
        sb.close()


def detect(ctx: Ctx) -> Row:
    row = Row("detect", "Detection latency (`ssh -R` attempt to session killed)")
    goal = Goal("<= 1 s", lambda v: v <= 1000.0, on="value")
    name = "strict profile: `ssh -R` to killed"
    attempt = "ssh -o BatchMode=yes -o ConnectTimeout=2 -R 1:203.0.113.1:1 x"
    why: str | None = None  # the first attempt itself tells whether the guard is wired in
    vals: list[float] = []
    reasons: list[str] = []
    reps = ctx.reps(5, 2)
    dl = Deadline(60)
    while len(vals) < reps and dl.left():
        res = _one_detect(ctx, attempt, reasons)
        if isinstance(res, str):
            why = res
            break
        vals.append(res * MS)
    if vals and why is None:
        row.add(Line(name, "ms", stat(vals), goal=goal))
        row.notes.append(f"attempt: `{attempt}`; session ended with: {reasons[-1]}")
    else:
        row.add(unavailable(name, "ms", why or "no sample", goal=goal))
    return row
