"""Row 7: N live sessions on this machine: memory, per-command and start latency under load.

Memory per session = the session's host processes (firejail, its sandbox child, bash: RSS,
and PSS which splits shared pages fairly) + the owner's Python share (owner RSS growth / N).
Every session is closed in `finally`, whatever fails.
"""

from __future__ import annotations

import os
import threading
import time

import psutil

from sandbox import Sandbox

from .boxes import memory, session_pids
from .core import Ctx, Deadline, Goal, Line, Row, stat

MS = 1000.0
MIB = 1024.0 * 1024.0


def _start(ctx: Ctx) -> tuple[Sandbox, float]:
    t0 = time.perf_counter()
    sb = Sandbox(workdir=ctx.workspace())
    try:
        sb.start()
        sb.run("true")
    except BaseException:
        sb.close()
        raise
    return sb, time.perf_counter() - t0


def run(ctx: Ctx) -> Row:
    n = ctx.sessions
    row = Row("concurrency", f"Concurrency: {n} live sessions")
    k = ctx.reps(10, 5)
    dl = Deadline(300)
    me = psutil.Process(os.getpid())
    live: list[Sandbox] = []
    idle_start: list[float] = []
    idle_cmd: list[float] = []
    try:
        for _ in range(k):  # baseline: starts and commands with nothing else live
            sb, took = _start(ctx)
            idle_start.append(took * MS)
            try:
                for _ in range(50):
                    t0 = time.perf_counter()
                    sb.run("true")
                    idle_cmd.append((time.perf_counter() - t0) * MS)
            finally:
                sb.close()
        owner_before = me.memory_info().rss
        ramp: list[float] = []
        while len(live) < n and dl.left():
            sb, took = _start(ctx)
            live.append(sb)
            ramp.append(took * MS)
        owner_share = (me.memory_info().rss - owner_before) / max(1, len(live))
        rss = pss = 0.0
        for sb in live:
            r, p = memory(session_pids(sb))
            rss += r
            pss += p
        per_rss = [(rss / len(live) + owner_share) / MIB]
        per_pss = [(pss / len(live) + owner_share) / MIB]
        # Per-command latency, round robin over every live session (the others idle).
        rr: list[float] = []
        for _ in range(4):
            for sb in live:
                if not dl.left():
                    break
                t0 = time.perf_counter()
                sb.run("true")
                rr.append((time.perf_counter() - t0) * MS)
        # Per-command latency with every session running commands at once (a thread each).
        conc: list[float] = []
        lock = threading.Lock()

        def worker(sb: Sandbox) -> None:
            mine = []
            for _ in range(10):
                t0 = time.perf_counter()
                sb.run("true")
                mine.append((time.perf_counter() - t0) * MS)
            with lock:
                conc.extend(mine)

        threads = [threading.Thread(target=worker, args=(sb,), daemon=True) for sb in live]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, dl.remaining()))
        # Start latency with N live.
        loaded_start: list[float] = []
        for _ in range(k):
            if not dl.left():
                break
            sb, took = _start(ctx)
            loaded_start.append(took * MS)
            sb.close()
    finally:
        t0 = time.perf_counter()
        for sb in live:
            sb.close()
        close_all = time.perf_counter() - t0
    row.add(Line("start to ready, nothing else live", "ms", stat(idle_start)))
    row.add(Line(f"start to ready, while ramping to {len(live)} live", "ms", stat(ramp),
                 baseline="start to ready, nothing else live"))
    row.add(Line(f"start to ready, {len(live)} live", "ms", stat(loaded_start),
                 baseline="start to ready, nothing else live"))
    row.add(Line("run('true'), nothing else live", "ms", stat(idle_cmd)))
    row.add(Line(f"run('true'), round robin over {len(live)} live", "ms", stat(rr),
                 baseline="run('true'), nothing else live",
                 goal=Goal("<= 1 ms", lambda v: v <= 1.0, on="value")))
    row.add(Line(f"run('true'), {len(live)} threads at once", "ms", stat(conc),
                 baseline="run('true'), nothing else live",
                 note=f"{len(live)} commands in flight on {os.cpu_count()} cores"))
    row.add(Line("memory per session (RSS)", "MiB", stat(per_rss),
                 note=f"firejail x2 + bash + owner share {owner_share / MIB:.2f} MiB"))
    row.add(Line("memory per session (PSS)", "MiB", stat(per_pss),
                 note="shared pages split among sharers"))
    row.notes.append(f"closing all {len(live)} sessions took {close_all:.2f} s")
    if len(live) < n:
        row.notes.append(f"time bound hit: {len(live)} of {n} sessions started")
    return row
