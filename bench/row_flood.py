"""Row 8: the exec monitor under floods (red team H4, M5).

Detection under a flood: a `strict` session B runs a script that writes the time and
then runs `ssh -o BatchMode=yes -R 1:127.0.0.1:1 x` (a script, so the text check does not
see it: the exec monitor has to). The figure is from that timestamp to B's session.end
(killed by tunnels.ssh_forward). Each round measures it once with nothing else running
(baseline), once while another session A runs the red team's flood.py (fork+exec
`sh -c 'sleep 0.05'` with 15 x 131000 bytes of arguments, 8 at a time), and once with
the flood running in B itself (the red team's a2.sh), interleaved.

Record budget: a session runs `/bin/true` in a loop for a few seconds, once with the
default profile's budget and once with the budget off (`[recording]` limits set to 0).
Store bytes/s is the size of the rows the session wrote (detail JSON, hashes, kind) per
second; supervisor CPU is this process's CPU time over the loop (it is the supervisor:
the store, the monitor and the rules run in it) plus the monitor's reader process's, in
percent of one core.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sqlite3
import time
from pathlib import Path

from sandbox import Sandbox, SandboxError, Store
from sandbox.parts.procs import monitor

from .boxes import profile_file
from .core import Ctx, Deadline, Goal, Line, Row, stat, unavailable

MS = 1000.0
FLOOD_S = 8
# The red team's flood.py: for N seconds, fork+exec `sh -c 'sleep 0.05'` with 15 x 131000
# bytes of argument, 8 at a time; bounded in time and count (tests/procs/test_flood.py too).
FLOOD_PY = """\
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
big = "x" * 131000
running, n = set(), 0
while time.monotonic() < end and n < 20000:
    while len(running) < 8 and n < 20000:
        pid = os.fork()
        if pid == 0:
            try:
                os.execvp("sh", ["sh", "-c", "sleep 0.05", *([big] * 15)])
            finally:
                os._exit(127)
        running.add(pid)
        n += 1
    running.discard(os.wait()[0])
for pid in running:
    os.waitpid(pid, 0)
print(n)
"""
SSH_R = ("#!/bin/sh\ndate +%s.%N > t0\nssh -o BatchMode=yes -R 1:127.0.0.1:1 x 2>/dev/null\n"
         "sleep 20\necho survived\n")
LOOP = ("n=0; end=$((SECONDS+{s})); while [ $SECONDS -lt $end ] && [ $n -lt 200000 ]; "
        "do /bin/true; n=$((n+1)); done; echo n=$n")
NO_BUDGET = """extends = "default"
[recording]
max_events_per_s = 0
max_event_bytes_per_s = 0
max_monitor_cpu_percent = 0
"""


def _put(ctx: Ctx, ws: Path, name: str, text: str) -> None:
    path = ws / name
    path.write_text(text)
    path.chmod(0o755)
    if ctx.agent_uid is not None and ctx.agent_gid is not None:
        os.chown(path, ctx.agent_uid, ctx.agent_gid)


def _detect_once(ctx: Ctx, self_flood: bool = False) -> float | str:
    """Seconds from the script's timestamp (just before ssh) to B's session.end; with
    `self_flood`, B itself runs the flood first (the red team's a2.sh)."""
    ws = ctx.workspace()
    script = SSH_R
    if self_flood:
        _put(ctx, ws, "flood.py", FLOOD_PY)
        script = (f"#!/bin/sh\npython3 flood.py {FLOOD_S} >/dev/null 2>&1 &\nsleep 2\n"
                  + SSH_R.partition("\n")[2])
    _put(ctx, ws, "a1.sh", script)
    sb = Sandbox(profile="strict", workdir=ws)
    try:
        sb.start()
        with contextlib.suppress(SandboxError):  # SessionClosed: killed while it ran
            sb.run("sh a1.sh", timeout=30)  # (the bench dirs are under /var: noexec)
        dl = Deadline(10)
        while dl.left() and sb.state != "killed":
            time.sleep(0.01)
    finally:
        sb.close()  # waits for the kill's teardown: session.end is written by then
    if sb.state != "killed":
        return f"session B not killed (state {sb.state})"
    reason = str(sb._session.reason)
    if "tunnels.ssh_forward" not in reason:
        return f"killed for another reason: {reason}"
    end = [e["ts"] for e in Store().events(sb.id, kinds=("session.end",))]
    if not end:
        return "no session.end recorded"
    return end[0] - float((ws / "t0").read_text().strip())


def _detect(ctx: Ctx, row: Row) -> None:
    goal = Goal("<= 1 s", lambda v: v <= 1000.0, on="value")
    base_name = "B alone: `ssh -R` exec to session killed (strict)"
    name = "B while A floods (15 x 131000-byte argv, 8 at a time)"
    self_name = "B while B itself floods (the same flood, started 2 s before)"
    own: list[float] = []
    base: list[float] = []
    flood: list[float] = []
    why: dict[str, str] = {}
    ws_a = ctx.workspace()
    _put(ctx, ws_a, "flood.py", FLOOD_PY)
    a = Sandbox(workdir=ws_a)
    reps = ctx.reps(5, 2)
    dl = Deadline(240)
    lost = truncated = execs = 0
    overruns = monitor().lost_events
    try:
        a.start()
        i = 0
        while i < reps and dl.left():
            res = _detect_once(ctx)
            if isinstance(res, str):
                why[base_name] = res
            else:
                base.append(res * MS)
            a.run(f"python3 flood.py {FLOOD_S} > flood.out 2>&1 &", timeout=30)
            time.sleep(2.0)  # the flood is in full swing
            res = _detect_once(ctx)
            if isinstance(res, str):
                why[name] = res
            else:
                flood.append(res * MS)
            a.run("wait", timeout=60)
            res = _detect_once(ctx, self_flood=True)
            if isinstance(res, str):
                why[self_name] = res
            else:
                own.append(res * MS)
            with contextlib.suppress(OSError, ValueError):
                execs += int((ws_a / "flood.out").read_text().split()[-1])
            i += 1
        events = Store().events(a.id, kinds=("proc.exec", "proc.lost", "record.dropped"),
                                limit=1_000_000)
        lost = sum(e["detail"].get("lost", 0) for e in events if e["kind"] == "proc.lost")
        truncated = sum(1 for e in events if e["detail"].get("argv_truncated"))
    finally:
        a.close()
    row.add(Line(base_name, "ms", stat(base)) if base else
            unavailable(base_name, "ms", why.get(base_name, "no sample")))
    row.add(Line(name, "ms", stat(flood), baseline=base_name, goal=goal) if flood else
            unavailable(name, "ms", why.get(name, "no sample"), goal=goal))
    row.add(Line(self_name, "ms", stat(own), baseline=base_name, goal=goal) if own else
            unavailable(self_name, "ms", why.get(self_name, "no sample"), goal=goal))
    row.notes.append(
        f"A's flood: {execs} execs of ~1.97 MB argv in {i} x {FLOOD_S} s; A recorded "
        f"{truncated} proc.exec rows cut to 16 KiB and {lost} execs lost (proc.lost: its "
        f"own share of supervisor CPU is capped); kernel overruns (ENOBUFS): "
        f"{monitor().lost_events - overruns}")


def _rows_bytes(sid: str) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(Store().path)) as db:
        n, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(detail) + LENGTH(kind) + LENGTH(hash) "
            "+ LENGTH(prev_hash) + 40), 0) FROM events WHERE session_id=?", (sid,)).fetchone()
    return int(n), int(size)


def _cpu() -> float:
    """This process's CPU seconds plus the exec monitor's reader process's."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime + monitor().reader_cpu_s()


def _loop_once(ctx: Ctx, profile: str, seconds: int) -> dict[str, float]:
    sb = Sandbox(profile=profile, workdir=ctx.workspace())
    try:
        sb.start()
        sb.run("true")
        n0, b0 = _rows_bytes(sb.id)
        c0, t0 = _cpu(), time.perf_counter()
        out = sb.run(LOOP.format(s=seconds), timeout=seconds + 30).output
        c1, t1 = _cpu(), time.perf_counter()
        n1, b1 = _rows_bytes(sb.id)
        sid = sb.id
    finally:
        sb.close()
    dropped = sum(e["detail"]["counts"].get("proc.exec", 0)
                  for e in Store().events(sid, kinds=("record.dropped",)))
    took = t1 - t0
    return {"bytes_s": (b1 - b0) / took, "cpu_pct": 100.0 * (c1 - c0) / took,
            "execs_s": int(out.strip().rpartition("n=")[2] or 0) / took,
            "rows": n1 - n0, "dropped": dropped}


def _budget(ctx: Ctx, row: Row) -> None:
    off = str(profile_file(ctx, "no-budget", NO_BUDGET))
    seconds = 5
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    reps = ctx.reps(3, 1)
    dl = Deadline(150)
    i = 0
    while i < reps and dl.left():
        runs["off"].append(_loop_once(ctx, off, seconds))
        runs["on"].append(_loop_once(ctx, "default", seconds))
        i += 1
    names = {
        ("off", "bytes_s"): "exec loop, no budget: store bytes/s",
        ("on", "bytes_s"): "exec loop, default budget: store bytes/s",
        ("off", "cpu_pct"): "exec loop, no budget: supervisor CPU",
        ("on", "cpu_pct"): "exec loop, default budget: supervisor CPU",
    }
    for (which, key), name in names.items():
        unit = "B/s" if key == "bytes_s" else "% core"
        vals = [r[key] for r in runs[which]]
        base = names[("off", key)] if which == "on" else None
        row.add(Line(name, unit, stat(vals), baseline=base, ratio_kind="%")
                if vals else unavailable(name, unit, "no sample"))
    for which in ("off", "on"):
        rs = runs[which]
        if rs:
            row.notes.append(
                f"budget {which}: {sum(r['execs_s'] for r in rs) / len(rs):.0f} execs/s, "
                f"{sum(r['rows'] for r in rs) / len(rs):.0f} rows and "
                f"{sum(r['dropped'] for r in rs) / len(rs):.0f} execs in record.dropped "
                f"per {seconds} s loop")


def run(ctx: Ctx) -> Row:
    row = Row("flood", "Exec monitor under floods: detection latency and the record budget")
    _detect(ctx, row)
    _budget(ctx, row)
    return row
